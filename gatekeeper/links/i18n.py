"""What recipients read, French first with English: catalogs, language choice, dates in words.

The choice: ``?lang=fr|en`` when given (the switch on every page), else the browser's
``Accept-Language``, else French. Catalogs are plain dicts checked by a test to hold the same
keys; texts with ``{placeholders}`` are formatted in the template and auto-escaped there.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

LANGS = ("fr", "en")
DEFAULT_LANG = "fr"
# Bump when a text that proves a consent or an objection changes (stored with each record).
TEXT_VERSION = "2026-11-1"

_MONTHS = {
    "fr": (
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ),
    "en": (
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ),
}

CHANNEL_BY = {
    "fr": {
        "email": "par e-mail",
        "sms": "par SMS",
        "phone": "par téléphone",
        "postal": "par courrier",
        "automated_call": "par appel automatisé",
        "fax": "par fax",
    },
    "en": {
        "email": "by email",
        "sms": "by text message",
        "phone": "by phone",
        "postal": "by post",
        "automated_call": "by automated call",
        "fax": "by fax",
    },
}

MESSAGES: dict[str, dict[str, str]] = {
    "fr": {
        "switch_to": "English",
        "switch_label": "Read this page in English",
        "personal": "Ce lien vous est personnel : merci de ne pas le transférer.",
        "controller": "Responsable du traitement : {sender}",
        "u_title": "Se désinscrire",
        "u_intro": "Confirmez ci-dessous : {sender} cessera alors de vous envoyer des messages "
        "commerciaux {channel_by}.",
        "u_button": "Me désinscrire",
        "u_prefs": "Vous préférez choisir canal par canal ?",
        "u_prefs_link": "Gérer mes préférences",
        "u_done_title": "Vous êtes désinscrit(e)",
        "u_done_body": "C'est pris en compte immédiatement : {sender} ne vous enverra plus "
        "de messages commerciaux {channel_by}.",
        "u_already": "Vous étiez déjà désinscrit(e) : rien n'a changé.",
        "u_mistake": "Une erreur ? Vous pouvez donner à nouveau votre accord depuis vos préférences.",
        "r_title": "Souhaitez-vous garder le contact ?",
        "r_holds": "{sender} conserve aujourd'hui ces informations vous concernant :",
        "r_item_email": "votre adresse e-mail ({value})",
        "r_item_phone": "votre numéro de téléphone ({value})",
        "r_item_name": "vos nom et prénom",
        "r_item_postal": "votre adresse postale",
        "r_item_history": "l'historique de nos échanges (achats, clics, réponses)",
        "r_deadline": "Sans réponse de votre part, elles seront supprimées le {date}.",
        "r_keep_explain": "Si vous choisissez de rester informé(e), nous les garderons jusqu'au "
        "{date} et vous pourrez vous désinscrire à tout moment.",
        "r_answer": "Votre réponse",
        "r_keep": "Oui, tenez-moi informé(e)",
        "r_stop": "Non merci, arrêtez",
        "r_kept_title": "Merci, c'est noté",
        "r_kept_body": "Nous continuerons à vous écrire. Vos données seront conservées "
        "jusqu'au {date}, sauf si vous vous désinscrivez avant.",
        "r_stopped_title": "C'est noté",
        "r_stopped_body": "Nous ne vous contacterons plus. Vos données seront supprimées sous "
        "peu ; seule une empreinte non réversible de vos coordonnées est gardée "
        "pour ne plus jamais vous écrire.",
        "r_late_title": "Ce lien a expiré",
        "r_late_body": "La date limite du {date} est passée : votre réponse ne peut plus être "
        "enregistrée. Vos données ne servent plus à vous démarcher et seront "
        "supprimées.",
        "p_title": "Vos préférences de contact",
        "p_intro": "Choisissez, canal par canal, si {sender} peut vous envoyer ses offres et ses nouvelles.",
        "p_email": "Par e-mail",
        "p_sms": "Par SMS",
        "p_phone": "Par téléphone",
        "p_postal": "Par courrier",
        "p_yes": "Oui, j'accepte",
        "p_no": "Non merci",
        "p_unset": "Aucun choix enregistré pour l'instant.",
        "p_save": "Enregistrer mes choix",
        "p_retention_title": "Combien de temps gardons-nous vos données ?",
        "p_deadline": "Vos données seront supprimées le {date}, sauf si vous nous recontactez "
        "d'ici là (un clic dans l'un de nos messages, une demande, une commande) : "
        "chaque contact de votre part repousse cette date de {years} ans.",
        "p_running": "Vos données sont conservées tant que votre contrat est en cours, puis "
        "{years} ans après sa fin.",
        "p_expired": "La durée de conservation de vos données est écoulée : elles seront "
        "supprimées sous peu, sauf si vous acceptez ci-dessus d'avoir de nos nouvelles.",
        "p_saved_title": "Vos choix sont enregistrés",
        "p_saved_none": "Aucun changement : c'étaient déjà vos choix.",
        "p_saved_yes": "{channel} : accepté",
        "p_saved_no": "{channel} : refusé",
        "p_back": "Revenir à mes préférences",
        "rights_title": "Vos droits sur vos données",
        "rights_intro": "Vous pouvez à tout moment obtenir une copie de vos données, refuser toute "
        "prospection ou faire effacer vos données (RGPD, articles 15, 17 et 21).",
        "rights_access": "Recevoir une copie de mes données",
        "rights_access_note": "Elle est envoyée à votre propre adresse e-mail, jamais ailleurs.",
        "rights_object": "Ne plus jamais être démarché(e), sur aucun canal",
        "rights_erase": "Effacer mes données",
        "rights_erase_confirm": "Je confirme : effacer mes données maintenant (irréversible)",
        "rights_access_title": "Copie envoyée",
        "rights_access_body": "Une copie de vos données vient d'être envoyée à votre adresse e-mail.",
        "rights_no_email_title": "Envoi impossible",
        "rights_no_email_body": "Nous n'avons pas d'adresse e-mail pour vous : écrivez-nous pour "
        "obtenir une copie de vos données.",
        "rights_unavailable_title": "Réessayez plus tard",
        "rights_unavailable_body": "L'envoi n'a pas pu se faire pour l'instant. Rien n'est perdu : "
        "réessayez dans quelques minutes.",
        "rights_objected_title": "C'est noté",
        "rights_objected_body": "Vous ne serez plus démarché(e), sur aucun canal, à compter de maintenant.",
        "rights_erased_title": "Vos données sont effacées",
        "rights_erased_body": "Vos données ont été effacées. Seule une empreinte non réversible de vos "
        "coordonnées est gardée pour ne plus jamais vous écrire ; les factures sont "
        "conservées à part, le temps exigé par la loi.",
        "rights_confirm_title": "Confirmation nécessaire",
        "rights_confirm_body": "Cochez la case de confirmation pour effacer vos données.",
        "e_invalid_title": "Lien invalide",
        "e_invalid_body": "Ce lien est incomplet ou a été modifié. Copiez-le en entier depuis le "
        "message reçu, ou utilisez le lien d'un message plus récent. Rien n'a "
        "été enregistré.",
        "e_expired_title": "Lien expiré",
        "e_expired_body": "Ce lien est trop ancien pour être utilisé : prenez celui d'un message "
        "plus récent. Rien n'a été enregistré.",
        "e_expired_dest": "La page vers laquelle il menait :",
        "e_erased_title": "Vos données ont été effacées",
        "e_erased_body": "Nous ne détenons plus vos coordonnées : vous ne recevrez plus nos "
        "messages. Rien d'autre n'est nécessaire de votre part, et rien n'a été "
        "enregistré.",
        "e_csrf_title": "Le formulaire a expiré",
        "e_csrf_body": "Pour votre sécurité, rechargez la page puis validez à nouveau. Si cela "
        "se répète, autorisez les cookies pour ce site : ils servent uniquement "
        "à protéger ce formulaire. Rien n'a été enregistré.",
        "e_reload": "Recharger la page",
        "e_form_title": "Réponse incomplète",
        "e_form_body": "Aucun choix n'a été reçu. Revenez à la page et choisissez une réponse.",
        "e_rate_title": "Trop de demandes",
        "e_rate_body": "Merci de patienter une minute avant de réessayer.",
        "e_busy_title": "Service momentanément occupé",
        "e_busy_body": "Votre demande n'a pas pu être enregistrée pour l'instant, et rien n'a "
        "été enregistré. Réessayez dans une minute avec le même lien.",
    },
    "en": {
        "switch_to": "Français",
        "switch_label": "Lire cette page en français",
        "personal": "This link is personal to you: please do not forward it.",
        "controller": "Data controller: {sender}",
        "u_title": "Unsubscribe",
        "u_intro": "Confirm below and {sender} will stop sending you marketing messages {channel_by}.",
        "u_button": "Unsubscribe me",
        "u_prefs": "Would you rather choose channel by channel?",
        "u_prefs_link": "Manage my preferences",
        "u_done_title": "You are unsubscribed",
        "u_done_body": "This takes effect immediately: {sender} will send you no more marketing "
        "messages {channel_by}.",
        "u_already": "You were already unsubscribed: nothing has changed.",
        "u_mistake": "A mistake? You can opt in again from your preferences.",
        "r_title": "Would you like to stay in touch?",
        "r_holds": "{sender} currently holds this information about you:",
        "r_item_email": "your email address ({value})",
        "r_item_phone": "your phone number ({value})",
        "r_item_name": "your first and last name",
        "r_item_postal": "your postal address",
        "r_item_history": "the history of our exchanges (purchases, clicks, replies)",
        "r_deadline": "Unless you answer, it will be deleted on {date}.",
        "r_keep_explain": "If you choose to stay informed, we will keep it until {date}, and you "
        "can unsubscribe at any time.",
        "r_answer": "Your answer",
        "r_keep": "Yes, keep me informed",
        "r_stop": "No thanks, stop",
        "r_kept_title": "Thank you, that's noted",
        "r_kept_body": "We will keep writing to you. Your data will be kept until {date}, unless "
        "you unsubscribe before then.",
        "r_stopped_title": "Noted",
        "r_stopped_body": "We will not contact you again. Your data will be deleted shortly; only "
        "an irreversible fingerprint of your contact details is kept so that we "
        "never write to you again.",
        "r_late_title": "This link has expired",
        "r_late_body": "The deadline of {date} has passed, so your answer can no longer be "
        "recorded. Your data is no longer used for marketing and will be deleted.",
        "p_title": "Your contact preferences",
        "p_intro": "Choose, channel by channel, whether {sender} may send you its offers and news.",
        "p_email": "By email",
        "p_sms": "By text message",
        "p_phone": "By phone",
        "p_postal": "By post",
        "p_yes": "Yes, I agree",
        "p_no": "No thanks",
        "p_unset": "No choice recorded yet.",
        "p_save": "Save my choices",
        "p_retention_title": "How long do we keep your data?",
        "p_deadline": "Your data will be deleted on {date} unless you get in touch with us before "
        "then (a click in one of our messages, a request, an order): each contact "
        "from you moves this date {years} years later.",
        "p_running": "Your data is kept while your contract runs, then for {years} years after it ends.",
        "p_expired": "The period for keeping your data has ended: it will be deleted shortly, "
        "unless you agree above to hear from us.",
        "p_saved_title": "Your choices are saved",
        "p_saved_none": "No change: these already were your choices.",
        "p_saved_yes": "{channel}: accepted",
        "p_saved_no": "{channel}: refused",
        "p_back": "Back to my preferences",
        "rights_title": "Your rights over your data",
        "rights_intro": "At any time you may get a copy of your data, refuse all marketing or have "
        "your data erased (GDPR articles 15, 17 and 21).",
        "rights_access": "Send me a copy of my data",
        "rights_access_note": "It is sent to your own e-mail address, never anywhere else.",
        "rights_object": "Never contact me for marketing again, on any channel",
        "rights_erase": "Erase my data",
        "rights_erase_confirm": "I confirm: erase my data now (this cannot be undone)",
        "rights_access_title": "Copy sent",
        "rights_access_body": "A copy of your data has just been sent to your e-mail address.",
        "rights_no_email_title": "Cannot send",
        "rights_no_email_body": "We have no e-mail address for you: write to us to get a copy of your data.",
        "rights_unavailable_title": "Please try again later",
        "rights_unavailable_body": "The message could not be sent just now. Nothing is lost: try again "
        "in a few minutes.",
        "rights_objected_title": "Noted",
        "rights_objected_body": "You will not receive any marketing again, on any channel, from now on.",
        "rights_erased_title": "Your data is erased",
        "rights_erased_body": "Your data has been erased. Only an irreversible fingerprint of your contact "
        "details is kept so that we never write to you again; invoices are kept "
        "apart, for as long as the law requires.",
        "rights_confirm_title": "Confirmation needed",
        "rights_confirm_body": "Tick the confirmation box to erase your data.",
        "e_invalid_title": "Invalid link",
        "e_invalid_body": "This link is incomplete or has been altered. Copy it in full from the "
        "message, or use the link in a more recent message. Nothing was "
        "recorded.",
        "e_expired_title": "Link expired",
        "e_expired_body": "This link is too old to be used: please use the one in a more recent "
        "message. Nothing was recorded.",
        "e_expired_dest": "The page it led to:",
        "e_erased_title": "Your data has been erased",
        "e_erased_body": "We no longer hold your contact details: you will not receive our "
        "messages. Nothing else is needed from you, and nothing was recorded.",
        "e_csrf_title": "The form has expired",
        "e_csrf_body": "For your security, reload the page and submit again. If this keeps "
        "happening, allow cookies for this site: they only protect this form. "
        "Nothing was recorded.",
        "e_reload": "Reload the page",
        "e_form_title": "Incomplete answer",
        "e_form_body": "No choice was received. Go back to the page and choose an answer.",
        "e_rate_title": "Too many requests",
        "e_rate_body": "Please wait a minute before trying again.",
        "e_busy_title": "Service briefly busy",
        "e_busy_body": "Your request could not be recorded just now, and nothing was recorded. "
        "Please try again in a minute with the same link.",
    },
}


@lru_cache(maxsize=1024)
def negotiate(query_lang: str | None, accept_language: str | None) -> str:
    # Browsers send a handful of distinct headers: parse each once per worker.
    if query_lang in LANGS:
        return str(query_lang)
    if accept_language:
        accept = parse_accept_header(accept_language, LanguageAccept)
        return str(accept.best_match(LANGS, default=DEFAULT_LANG))
    return DEFAULT_LANG


def zone_of(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "Europe/Paris")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Europe/Paris")


def date_in_words(moment: datetime, lang: str, timezone: str | None = None) -> str:
    """ "10 juin 2028" / "10 June 2028", in the person's time zone (Paris by default)."""
    local = moment.astimezone(zone_of(timezone))
    return f"{local.day} {_MONTHS[lang][local.month - 1]} {local.year}"


def mask_email(email: str) -> str:
    """Enough to recognise one's own address, not enough to read someone else's."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}•••@{domain}"


def mask_phone(phone: str) -> str:
    return f"•• •• •• {phone[-2:]}" if len(phone) >= 2 else "••"
