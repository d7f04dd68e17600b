"""Probing a verifier over HTTP: capsim's own ``/v1`` API, and any privacyIDEA-style endpoint.

Theory of operation
-------------------
1. :class:`CapsimHttpAdapter` speaks capsim's service (docs/http-api.md) through
   :class:`capsim.client.VerifierClient`: it enrols (``/v1/users``, activation codes,
   ``/v1/enrolments``), issues (``/v1/credentials/{id}/operations``) and submits
   (``…/verify``, ``…/login``; the request id as ``Idempotency-Key``). The client's
   :class:`~capsim.errors.InvalidCode` is ``REJECT`` and
   :class:`~capsim.errors.RequestConflict` is ``CONFLICT``. Its key needs the operator scope
   (enrolment is an operator act).
2. :class:`PrivacyIdeaAdapter` speaks privacyIDEA's ``/validate/triggerchallenge`` (a Respond
   challenge: ``detail.transaction_id`` and ``detail.multi_challenge[0].attributes.challenge``,
   or the first 8-digit run of the message) and ``/validate/check`` (``user``, ``pass``,
   ``serial``, and ``transaction_id`` for a challenge; without it, an Identify login):
   ``result.value`` true is ``ACCEPT``, false ``REJECT``. privacyIDEA has no enrolment of CAP
   cards and no request ids, so the adapter takes an :class:`~capsim.probe.adapter.Enroller`
   (for capsim's own service: a :class:`CapsimHttpAdapter` on the same URL) and the checks
   that need request ids, Sign or TDS are skipped. The credential id the enroller returns is
   the privacyIDEA ``serial``.
3. Neither adapter logs anything; the API key travels only in ``Authorization``; errors name
   the route and status, never a code or a key. An unreachable service is
   :class:`~capsim.errors.TemporaryFailure` (the run stops).
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any

from capsim.errors import (
    CapsimError,
    ConfigError,
    InvalidCode,
    RequestConflict,
    TemporaryFailure,
    ValidationError,
)
from capsim.probe.adapter import (
    ALL_MODES,
    Enroller,
    Issued,
    Limits,
    OperationRequest,
    Refused,
    Target,
    TargetKind,
    Verdict,
)

if TYPE_CHECKING:
    from capsim.cards import EmvCapCard

__all__ = ["CapsimHttpAdapter", "PrivacyIdeaAdapter", "shown_url"]

_EIGHT_DIGITS = re.compile(r"(?<![0-9])[0-9]{8}(?![0-9])")


def shown_url(url: str) -> str:
    """``url`` without user information or query (what a report may show).

    >>> shown_url("https://probe:secret@pi.example/base?x=1")
    'https://pi.example/base'
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _unknown(kind: TargetKind) -> Target:
    return Target(kind, ("cr-" if kind == "credential" else "op-") + secrets.token_hex(8))


class CapsimHttpAdapter:
    """capsim's HTTP service as a :class:`~capsim.probe.adapter.VerifierAdapter` (rule 1).

    Parameters
    ----------
    base_url, api_key:
        The service and an operator client's key.
    issuer_key_id:
        The service's key id of the issuer keys the probe's cards are made with
        (``iss-`` + the IMK-AC check value, :func:`capsim.verifier.keyring.issuer_key_id`).
    limits:
        The service's policy (it does not publish it; default: capsim's defaults).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        issuer_key_id: str,
        limits: Limits | None = None,
        timeout: float = 30.0,
    ) -> None:
        from capsim.client import VerifierClient

        self._client = VerifierClient(base_url, api_key, timeout=timeout)
        self._key_id = issuer_key_id
        self._limits = limits or Limits()
        self._name = f"capsim HTTP service {shown_url(base_url)}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def modes(self) -> frozenset[str]:
        return ALL_MODES

    @property
    def request_ids(self) -> bool:
        return True

    def enroll(self, card: EmvCapCard, *, user: str, first_code: str) -> str:
        from capsim.verifier.enrolment import credential_profile_from_card

        try:
            self._client.get_user(user)
        except ValidationError:  # not-found
            self._client.add_user(user)
        activation = self._client.issue_activation_code(user)
        cred = self._client.enroll(
            activation.code,
            pan=card.profile.pan,
            psn=card.profile.psn,
            profile=credential_profile_from_card(card.profile).to_dict(),
            issuer_key_id=self._key_id,
            first_code=first_code,
        )
        return cred.credential_id

    def issue(self, credential: str, request: OperationRequest) -> Issued | Refused:
        try:
            op = self._client.issue_operation(
                credential,
                mode=request.mode,
                reference=request.reference,
                amount=request.amount_minor,
                currency=request.currency,
                payee=request.payee,
                fields=list(request.fields) if request.mode == "tds" else None,
            )
        except (ValidationError, ConfigError) as exc:
            return Refused(str(exc))
        return Issued(target=Target("operation", op.operation_id), request=request, challenge=op.challenge)

    def submit(self, target: Target, code: str, *, request_id: str | None = None) -> Verdict:
        try:
            if target.kind == "credential":
                self._client.login(target.id, code, request_id=request_id)
            else:
                self._client.verify(target.id, code, request_id=request_id)
        except InvalidCode:
            return Verdict.REJECT
        except RequestConflict:
            return Verdict.CONFLICT
        return Verdict.ACCEPT

    def unknown(self, kind: TargetKind) -> Target:
        return _unknown(kind)

    def close(self) -> None:
        self._client.close()


class PrivacyIdeaAdapter:
    """A privacyIDEA-style ``/validate`` endpoint as a
    :class:`~capsim.probe.adapter.VerifierAdapter` (rule 2).

    Parameters
    ----------
    base_url:
        The server (``/validate/…`` is appended).
    api_key:
        Sent as ``Authorization`` (bare, as privacyIDEA plugins send it); ``None``: no header.
    enroller:
        Binds the probe's cards to users; returns their serials.
    limits:
        The server's policy (default: capsim's defaults).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        enroller: Enroller,
        limits: Limits | None = None,
        timeout: float = 30.0,
    ) -> None:
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise ConfigError("base_url: expected an http:// or https:// URL")
        headers = {"Accept": "application/json"}
        if api_key:
            headers["Authorization"] = api_key
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self._enroller = enroller
        self._limits = limits or Limits()
        self._name = f"privacyIDEA endpoint {shown_url(base_url)}/validate"
        self._user_of: dict[str, str] = {}  # serial or transaction id -> user
        self._serial_of: dict[str, str] = {}  # transaction id -> serial
        self._last_user = "probe-nobody-" + secrets.token_hex(4)

    @property
    def name(self) -> str:
        return self._name

    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def modes(self) -> frozenset[str]:
        return frozenset({"respond"})

    @property
    def request_ids(self) -> bool:
        return False

    def enroll(self, card: EmvCapCard, *, user: str, first_code: str) -> str:
        serial = self._enroller.enroll(card, user=user, first_code=first_code)
        self._user_of[serial] = user
        self._last_user = user
        return serial

    def _post(self, route: str, params: dict[str, str]) -> dict[str, Any]:
        import httpx

        try:
            response = self._http.post(f"/validate/{route}", data=params)
        except httpx.HTTPError as exc:
            raise TemporaryFailure(
                f"/validate/{route}: the server is unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code in (429, 503):
            raise TemporaryFailure(f"/validate/{route}: the server answered {response.status_code}")
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(doc.get("result"), dict):
            raise CapsimError(
                f"/validate/{route}: answered {response.status_code} without privacyIDEA's envelope"
            )
        result = doc["result"]
        if response.status_code != 200 or result.get("status") is not True:
            error = result.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            raise CapsimError(f"/validate/{route}: answered {response.status_code}: {message or 'an error'}")
        return doc

    def issue(self, credential: str, request: OperationRequest) -> Issued | Refused:
        if request.mode != "respond" or request.reference is not None:
            return Refused("a privacyIDEA endpoint issues Respond challenges only")
        user = self._user_of.get(credential, credential)
        doc = self._post("triggerchallenge", {"user": user, "serial": credential})
        detail = doc.get("detail") if isinstance(doc.get("detail"), dict) else {}
        assert isinstance(detail, dict)
        transaction = detail.get("transaction_id")
        if doc["result"].get("value") in (0, False) or not isinstance(transaction, str):
            return Refused("no challenge was triggered")
        challenge = _challenge_of(detail)
        if challenge is None:
            return Refused("the challenge has no 8-digit number")
        self._user_of[transaction] = user
        self._serial_of[transaction] = credential
        return Issued(target=Target("operation", transaction), request=request, challenge=challenge)

    def submit(self, target: Target, code: str, *, request_id: str | None = None) -> Verdict:
        user = self._user_of.get(target.id, self._last_user if target.kind == "operation" else target.id)
        params = {"user": user, "pass": code}
        if target.kind == "operation":
            params["transaction_id"] = target.id
            serial = self._serial_of.get(target.id)
        else:
            serial = target.id if target.id in self._user_of else None
        if serial is not None:
            params["serial"] = serial
        doc = self._post("check", params)
        return Verdict.ACCEPT if doc["result"].get("value") is True else Verdict.REJECT

    def unknown(self, kind: TargetKind) -> Target:
        if kind == "credential":
            return Target(kind, "probe-nobody-" + secrets.token_hex(4))
        return _unknown(kind)

    def close(self) -> None:
        self._http.close()


def _challenge_of(detail: dict[str, Any]) -> str | None:
    """The 8-digit challenge of a triggerchallenge answer (module docstring, rule 2)."""
    challenges = detail.get("multi_challenge")
    if isinstance(challenges, list) and challenges and isinstance(challenges[0], dict):
        attributes = challenges[0].get("attributes")
        if isinstance(attributes, dict) and isinstance(attributes.get("challenge"), str):
            value: str = attributes["challenge"]
            if _EIGHT_DIGITS.fullmatch(value):
                return value
    message = detail.get("message")
    found = _EIGHT_DIGITS.search(message) if isinstance(message, str) else None
    return found.group(0) if found else None
