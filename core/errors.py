"""One root for the portal's domain errors, mapped to HTTP in one place.

Services raise these with a message a customer can read. ``NotFound`` means "not found in your
organization" (404, never a hint that it exists elsewhere); ``NotAllowed`` means "not allowed in
this state" (409). A view that has a form shows ``NotAllowed`` as a form error instead;
``core.middleware.DomainErrorMiddleware`` answers for any view that lets one through.
"""


class Refused(Exception):
    """A business action was refused; the message is written for the person who asked."""


class NotFound(Refused):
    """The object does not exist in the caller's organization."""


class NotAllowed(Refused):
    """The object exists, but the action is not allowed in its current state."""
