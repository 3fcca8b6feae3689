"""Retention: the reconsent mailer and the daily jobs that keep the register lawful
(RULES.md §4). ``tasks`` holds the scheduled tasks, ``purge`` the anonymisation, ``archive``
the separate legal-obligation store, ``outbox``/``transports``/``messages`` the mailer,
``scheduler`` the dedicated process and its once-per-slot guard, ``forecast`` the outlook."""
