"""Errors raised by the pure domain core; every one is a `DomainError`."""


class DomainError(Exception):
    """Base class of every error the domain core raises."""


class PolicyError(DomainError):
    """A policy mapping is missing a key or holds a bad value; the message names the key."""


class FactError(DomainError):
    """A fact handed to the core is malformed (naive datetime, unknown channel, ...)."""
