"""T=0 continuation: ``61xx`` and ``6Cxx`` handling (ISO/IEC 7816-3 §10.3.3, 7816-4 §5.6;
EMV 4.3 Book 1 §9.3.1; cap-protocol.md §2 step 8).

Over T=0 a card cannot return data together with the status word of a case 4 command, and
it may refuse an Le it does not like:

* ``61xx`` means "``xx`` more bytes are ready": the terminal sends GET RESPONSE
  ``00 C0 00 00 xx`` and appends the data it gets. The card may chain further ``61xx``;
  the chain is bounded (``max_get_response``) so a card that never stops cannot hang the
  terminal.
* ``6Cxx`` means "wrong Le, use ``xx``": the terminal re-sends the same command with
  Le = ``xx``, once. A second ``6Cxx`` in a row is a protocol error.

Two forms are offered: :class:`T0Exchange` is sans-IO (the caller moves the bytes) and
:func:`transmit_with_t0` drives it over any ``send(bytes) -> bytes`` callable. An answer whose
SW1 is neither ``61`` nor ``6C`` is final: :func:`transmit_with_t0` returns it as it came,
without building an exchange (the common case, one call per command). This is the one T=0
rule of capsim: :class:`capsim.transports.T0Handling`, the PC/SC transport and
:class:`capsim.reader.CapReader` all call :func:`transmit_with_t0`.

>>> script = {"80CA9F1700": "6C04", "80CA9F1704": "9F1701039000"}
>>> def send(apdu: bytes) -> bytes:
...     return bytes.fromhex(script[apdu.hex().upper()])
>>> transmit_with_t0(send, bytes.fromhex("80CA9F1700")).hex().upper()
'9F1701039000'
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from capsim.apdu.builders import get_response
from capsim.apdu.command import CommandApdu
from capsim.apdu.sw import bytes_available, correct_le, is_more_data, is_wrong_le
from capsim.errors import ApduFormatError, LocalProtocolError, RemoteProtocolError, ValidationError

__all__ = ["T0Exchange", "transmit_with_t0"]

_log = logging.getLogger(__name__)

_T0_SW1: Final = (0x61, 0x6C)  # 61xx more data, 6Cxx wrong Le


def _checked(apdu: object, max_get_response: object) -> bytes:
    """``apdu`` as bytes, after checking both arguments (:class:`ValidationError` otherwise)."""
    if not isinstance(apdu, bytes | bytearray | memoryview):
        raise ValidationError(f"apdu must be bytes, got {type(apdu).__name__}")
    if isinstance(max_get_response, bool) or not isinstance(max_get_response, int) or max_get_response < 0:
        raise ValidationError(f"max_get_response must be an int >= 0, got {max_get_response!r}")
    return bytes(apdu)


class T0Exchange:
    """Sans-IO T=0 continuation of one command.

    Usage: send :meth:`next_command`, hand the card's answer to :meth:`receive`, repeat while
    :meth:`next_command` returns bytes; then :attr:`result` holds the complete response
    (all chained data followed by the final status word).

    Parameters
    ----------
    apdu:
        The command APDU as sent to the card.
    max_get_response:
        The most GET RESPONSE commands one exchange may send (``>= 0``).

    Raises
    ------
    ValidationError
        When ``apdu`` is not bytes or ``max_get_response`` is negative.

    >>> x = T0Exchange(bytes.fromhex("00A4040002AAAA00"))
    >>> x.next_command().hex().upper()
    '00A4040002AAAA00'
    >>> x.receive(bytes.fromhex("6102"))
    >>> x.next_command().hex().upper()
    '00C0000002'
    >>> x.receive(bytes.fromhex("6F009000"))
    >>> x.next_command() is None, x.result.hex().upper()
    (True, '6F009000')
    """

    def __init__(self, apdu: bytes, *, max_get_response: int = 32) -> None:
        self._apdu = _checked(apdu, max_get_response)
        self._max = max_get_response
        self._pending: bytes | None = self._apdu
        self._data = bytearray()
        self._get_responses = 0
        self._last_was_le_retry = False
        self._result: bytes | None = None

    @property
    def result(self) -> bytes | None:
        """The complete response (data + SW) once the exchange is over, else ``None``."""
        return self._result

    @property
    def get_responses(self) -> int:
        """How many GET RESPONSE commands were issued so far."""
        return self._get_responses

    def next_command(self) -> bytes | None:
        """The next bytes to send to the card, or ``None`` when the exchange is over."""
        return self._pending

    def receive(self, response: bytes) -> None:
        """Feed the card's answer to the command last returned by :meth:`next_command`.

        Raises
        ------
        LocalProtocolError
            When no command is outstanding.
        RemoteProtocolError
            On a response shorter than 2 bytes, a second ``6Cxx`` in a row, a ``6Cxx`` for a
            command that cannot be re-sent, or a ``61xx`` chain longer than
            ``max_get_response``.
        """
        if self._pending is None:
            raise LocalProtocolError("T=0 exchange: no command is waiting for a response")
        if not isinstance(response, bytes | bytearray | memoryview):
            raise ValidationError(f"response must be bytes, got {type(response).__name__}")
        response = bytes(response)
        sent = self._pending
        if len(response) < 2:
            self._pending = None
            raise RemoteProtocolError(f"T=0: response of {len(response)} bytes has no status word")
        sw = int.from_bytes(response[-2:], "big")
        body = response[:-2]
        if is_wrong_le(sw):
            if self._last_was_le_retry:
                self._pending = None
                raise RemoteProtocolError(f"T=0: card answered {sw:04X} again after an Le correction")
            try:
                command = CommandApdu.from_bytes(sent)
            except ApduFormatError as exc:
                self._pending = None
                raise RemoteProtocolError(f"T=0: {sw:04X} for a command that cannot be re-sent") from exc
            le = correct_le(sw)
            _log.debug("T=0: %04X, re-sending with Le=%d", sw, le)
            self._pending = command.replace_le(le).to_bytes()
            self._last_was_le_retry = True
            return
        self._last_was_le_retry = False
        if is_more_data(sw):
            self._data += body
            if self._get_responses >= self._max:
                self._pending = None
                raise RemoteProtocolError(
                    f"T=0: more than {self._max} chained GET RESPONSE commands; card keeps answering 61xx"
                )
            self._get_responses += 1
            self._pending = get_response(bytes_available(sw)).to_bytes()
            return
        self._data += response
        self._pending = None
        self._result = bytes(self._data)


def transmit_with_t0(
    send: Callable[[bytes], bytes], apdu: bytes, *, max_get_response: int = 32
) -> bytes:
    """Send ``apdu`` through ``send`` and resolve ``61xx``/``6Cxx`` (ISO/IEC 7816-3 §10.3.3).

    Parameters
    ----------
    send:
        Sends one APDU and returns the raw response, SW included (a transport's ``transmit``).
    apdu:
        The command APDU.
    max_get_response:
        Bound on chained GET RESPONSE commands.

    Returns
    -------
    bytes
        All response data (concatenated over the chain) followed by the final status word.

    Raises
    ------
    ValidationError
        ``apdu`` is not bytes or ``max_get_response`` is not an int ``>= 0`` (nothing is sent).
    RemoteProtocolError
        See :meth:`T0Exchange.receive`. Errors from ``send`` propagate unchanged.
    """
    command = apdu
    if type(apdu) is not bytes or type(max_get_response) is not int or max_get_response < 0:
        command = _checked(apdu, max_get_response)
    first = send(command)
    if type(first) is bytes and len(first) >= 2 and first[-2] not in _T0_SW1:
        return first  # final as it came: no continuation, no exchange object
    exchange = T0Exchange(command, max_get_response=max_get_response)
    exchange.receive(first)
    pending = exchange.next_command()
    while pending is not None:
        exchange.receive(send(pending))
        pending = exchange.next_command()
    result = exchange.result
    if result is None:  # pragma: no cover - T0Exchange sets result whenever it stops
        raise LocalProtocolError("T=0 exchange ended without a result")
    return result
