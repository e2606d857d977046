"""Exception classes for the interop tests, importable by name.

``oslo_peer.py`` raises them from its server (``raise_error``) and, given
``--allowed-exmods oslo_peer_exceptions``, its client rebuilds them from a
remote failure as ``klass(*args, **kwargs)``.  They follow the pattern of
OpenStack services' own exceptions (nova.exception.NovaException,
oslo_messaging's RPCException): a ``msg_fmt`` filled from keyword arguments,
which the exception keeps in ``self.kwargs`` (what oslo.messaging sends as the
failure's ``kwargs``).
"""


class PeerException(Exception):
    """Base class: message from ``msg_fmt % kwargs`` unless one is given."""

    msg_fmt = 'An unknown exception occurred.'

    def __init__(self, message=None, **kwargs):
        self.kwargs = kwargs
        if not message:
            message = self.msg_fmt % kwargs
        self.message = message
        super().__init__(message)


class QuotaExceeded(PeerException):
    msg_fmt = ('Quota exceeded for %(resource)s: requested %(requested)s, '
               'limit %(limit)s')


class Positional(Exception):
    """Several positional arguments and no kwargs attribute."""

    def __init__(self, code, reason, *details):
        self.code = code
        self.reason = reason
        self.details = list(details)
        super().__init__(code, reason, *details)
