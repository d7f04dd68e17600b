"""What FastAPI does not put into the service's OpenAPI 3.1 document: security and links.

Theory of operation
-------------------
1. FastAPI builds the document from the routes; :func:`decorate` then adds what FastAPI does
   not know, as pure functions over the document: the API key (``Authorization: Bearer``) on
   every route but the probes, and the **links** of :data:`LINKS`.
2. **Links** (OpenAPI 3.1 ``links`` on a response) say which value of an answer feeds which
   parameter of a following call: an operation's id to ``GET /v1/operations/{id}`` and
   ``…/verify``; a user's id to its activation codes and credentials; an activation code to
   an enrolment; a credential's id to every credential route (its lifecycle, operations,
   logins); an organisation's id to its registration challenges, users and certificates, a
   challenge to its registration or authentication, a certificate's id to its routes.
   Clients and tools that follow links (schemathesis's stateful mode) chain calls
   with them; every link names its target by ``operationId`` and its values by runtime
   expressions (``$response.body#/…``), and a link whose source or target route does not
   exist is an error when the document is built, not a silent omission.
3. ``python -m capsim.service.openapi`` prints the document, sorted and indented; the copy in
   ``docs/openapi.json`` is checked against it by the tests.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = ["LINKS", "OPEN_PATHS", "Link", "decorate"]

#: Routes that need no key (the probes).
OPEN_PATHS: Final = frozenset({"/healthz", "/readyz"})

_CRED: Final = "/v1/credentials/{credential_id}"
_OP: Final = "/v1/operations/{operation_id}"
_USER: Final = "/v1/users/{user_id}"
_ORG: Final = "/v1/organisations/{org_id}"
_CERT: Final = "/v1/certificates/{credential_id}"


@dataclass(frozen=True)
class Link:
    """One OpenAPI link: from the ``status`` answer of ``source`` to a call of ``target``.

    ``source`` and ``target`` are ``(method, path)``; ``parameters`` maps a parameter name of
    the target to a runtime expression; ``body`` (optional) gives request-body fields.
    """

    name: str
    source: tuple[str, str]
    status: str
    target: tuple[str, str]
    description: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    body: Mapping[str, str] | None = None


# The routes a credential id leads to, by link name.
_CREDENTIAL_ROUTES: Final = (
    ("GetCredential", ("get", _CRED), "read the credential"),
    ("CreateOperation", ("post", _CRED + "/operations"), "issue an operation on the credential"),
    ("Login", ("post", _CRED + "/login"), "log in with an Identify code"),
    ("Activate", ("post", _CRED + "/activate"), "activate it with its first Identify code"),
    ("AdminActivate", ("post", _CRED + "/admin-activate"), "activate it without a code"),
    ("Suspend", ("post", _CRED + "/suspend"), "suspend it"),
    ("Resume", ("post", _CRED + "/resume"), "resume it"),
    ("Revoke", ("post", _CRED + "/revoke"), "revoke it"),
    ("Unlock", ("post", _CRED + "/unlock"), "clear its lock"),
    ("Lock", ("post", _CRED + "/lock"), "lock it for a time"),
    ("ReportLost", ("post", _CRED + "/report-lost"), "report the card lost"),
    ("Replace", ("post", _CRED + "/replace"), "replace the card"),
    ("PinScript", ("post", _CRED + "/pin-script"), "build an issuer PIN script"),
    ("Resync", ("post", _CRED + "/resync"), "resynchronise it"),
    ("AdvanceFloor", ("post", _CRED + "/advance-floor"), "raise its replay floor"),
)

# The routes a user id leads to.
_USER_ROUTES: Final = (
    ("GetUser", ("get", _USER), "read the user"),
    ("ListCredentials", ("get", _USER + "/credentials"), "list the user's credentials"),
    ("IssueActivationCode", ("post", _USER + "/activation-codes"), "issue an activation code"),
)


def _to_credential(source: tuple[str, str], status: str, pointer: str) -> list[Link]:
    value = f"$response.body#{pointer}"
    return [
        Link(name, source, status, target, f"{what} ({pointer[1:]} of this answer)", {"credential_id": value})
        for name, target, what in _CREDENTIAL_ROUTES
    ]


def _to_user(source: tuple[str, str], status: str, pointer: str) -> list[Link]:
    value = f"$response.body#{pointer}"
    return [
        Link(name, source, status, target, f"{what} ({pointer[1:]} of this answer)", {"user_id": value})
        for name, target, what in _USER_ROUTES
    ]


# The routes an organisation id, a certificate id and an organisation user's id lead to.
_ORGANISATION_ROUTES: Final = (
    ("GetOrganisation", ("get", _ORG), "read the organisation"),
    ("RegistrationChallenge", ("post", _ORG + "/registration-challenges"), "issue a registration challenge"),
    ("ListOrganisationUsers", ("get", _ORG + "/users"), "list its users"),
    ("ListOrganisationCertificates", ("get", _ORG + "/certificates"), "list its certificates"),
)
_CERTIFICATE_ROUTES: Final = (
    ("GetCertificate", ("get", _CERT), "read the certificate"),
    ("CertificateChallenge", ("post", _CERT + "/challenges"), "issue an operation challenge"),
    ("RevokeCertificate", ("post", _CERT + "/revoke"), "revoke it"),
    ("UnblockCertificate", ("post", _CERT + "/unblock"), "unblock it"),
)
_ORG_USER_ROUTES: Final = (
    (
        "RegisterSupplementary",
        ("post", _ORG + "/users/{user_id}/certificates"),
        "register a supplementary certificate",
    ),
    ("RemoveOrganisationUser", ("post", "/v1/organisation-users/{user_id}/remove"), "remove the user"),
)


def _certificate_links() -> list[Link]:
    """Organisation → its challenges, users and certificates; a challenge → its registration or
    authentication; a certificate → its routes (rule 2)."""
    out: list[Link] = []

    def each(routes: tuple[tuple[str, tuple[str, str], str], ...], source: tuple[str, str], status: str,
             params: dict[str, str]) -> None:  # fmt: skip
        out.extend(Link(name, source, status, target, what, params) for name, target, what in routes)

    org = {"org_id": "$response.body#/org_id"}
    each(_ORGANISATION_ROUTES, ("post", "/v1/organisations"), "201", org)
    each(_ORGANISATION_ROUTES[1:], ("get", _ORG), "200", org)
    register = ("post", _ORG + "/certificates")
    challenge = {"challenge_id": "$response.body#/challenge_id"}
    out.append(
        Link(
            "RegisterCertificate",
            ("post", _ORG + "/registration-challenges"),
            "201",
            register,
            "register a certificate with this challenge's signature",
            org,
            body=challenge,
        )
    )
    authenticate = ("post", "/v1/certificate-challenges/{challenge_id}/authenticate")
    out.append(
        Link(
            "Authenticate",
            ("post", _CERT + "/challenges"),
            "201",
            authenticate,
            "present the token's signature of this challenge",
            challenge,
        )
    )
    cert = {"credential_id": "$response.body#/cert_id"}
    for source, status in ((register, "201"), (("get", _CERT), "200"), (("post", _CERT + "/unblock"), "200")):
        routes = _CERTIFICATE_ROUTES[1:] if source[0] == "get" else _CERTIFICATE_ROUTES
        each(routes, source, status, cert)
    each(
        _CERTIFICATE_ROUTES,
        ("get", _ORG + "/certificates"),
        "200",
        {"credential_id": "$response.body#/0/cert_id"},
    )
    user = {"org_id": "$response.body#/org_id", "user_id": "$response.body#/user_id"}
    first = {"org_id": "$response.body#/0/org_id", "user_id": "$response.body#/0/user_id"}
    for source, status, params in ((register, "201", user), (("get", _ORG + "/users"), "200", first)):
        each(_ORG_USER_ROUTES[:1], source, status, params)
        each(_ORG_USER_ROUTES[1:], source, status, {"user_id": params["user_id"]})
    return out


def _links() -> tuple[Link, ...]:
    new_op = ("post", _CRED + "/operations")
    by_id = {"operation_id": "$response.body#/operation_id"}
    out: list[Link] = [
        Link("GetOperation", new_op, "201", ("get", _OP), "read the new operation", by_id),
        Link("VerifyOperation", new_op, "201", ("post", _OP + "/verify"), "verify its code", by_id),
        Link("VerifyOperation", ("get", _OP), "200", ("post", _OP + "/verify"), "verify its code", by_id),
        Link("GetOperation", ("post", _OP + "/verify"), "200", ("get", _OP), "read the operation", by_id),
        Link(
            "Enrol",
            ("post", _USER + "/activation-codes"),
            "201",
            ("post", "/v1/enrolments"),
            "enrol a card with this activation code",
            body={"activation_code": "$response.body#/code"},
        ),
    ]
    out += _to_user(("post", "/v1/users"), "201", "/user_id")
    out += _to_user(("get", "/v1/users"), "200", "/0/user_id")
    out += _to_user(("get", _USER), "200", "/user_id")[1:]
    out += _to_user(("post", _USER + "/activation-codes"), "201", "/user_id")[:1]
    out += _to_user(("get", _CRED), "200", "/user_id")[:1]
    out += _to_credential(new_op, "201", "/credential_id")[:1]
    out += _to_credential(("get", _USER + "/credentials"), "200", "/0/credential_id")
    out += _to_credential(("post", _CRED + "/report-lost"), "200", "/replacement/credential_id")
    # Every answer that is a credential (or an acceptance, which names its credential).
    returns_credential = [("post", "/v1/enrolments")] + [
        target for name, target, _ in _CREDENTIAL_ROUTES if name not in _NO_CREDENTIAL_ANSWER
    ]
    for source in returns_credential:
        status = "201" if source[1] == "/v1/enrolments" else "200"
        out += _to_credential(source, status, "/credential_id")
    return tuple(out + _certificate_links())


# Credential routes whose answers do not carry a credential id (or carry it elsewhere).
_NO_CREDENTIAL_ANSWER: Final = frozenset(
    {"CreateOperation", "ReportLost", "PinScript", "Resync", "AdvanceFloor"}
)


#: Every link of the document (rule 2).
LINKS: Final = _links()


def decorate(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with the API key declared and :data:`LINKS` added (rules 1 and 2)."""
    out = copy.deepcopy(dict(doc))
    out.setdefault("components", {})["securitySchemes"] = {
        "apiKey": {"type": "http", "scheme": "bearer", "description": "capsim_<client id>_<secret>"}
    }
    paths: dict[str, dict[str, Any]] = out.get("paths", {})
    for path, ops in paths.items():
        for op in ops.values():
            if path not in OPEN_PATHS:
                op["security"] = [{"apiKey": []}]
    for link in LINKS:
        source = _operation(paths, link.source)
        target = _operation(paths, link.target)
        answer = source["responses"].get(link.status)
        if answer is None:
            raise KeyError(f"link {link.name}: {link.source} answers no {link.status}")
        entry: dict[str, Any] = {"operationId": target["operationId"], "description": link.description}
        if link.parameters:
            entry["parameters"] = dict(link.parameters)
        if link.body is not None:
            entry["requestBody"] = dict(link.body)
        links = answer.setdefault("links", {})
        if link.name in links:
            raise KeyError(f"link {link.name}: defined twice on {link.source} {link.status}")
        links[link.name] = entry
    return out


def _operation(paths: Mapping[str, Mapping[str, Any]], where: tuple[str, str]) -> dict[str, Any]:
    method, path = where
    try:
        op: dict[str, Any] = paths[path][method]
    except KeyError:
        raise KeyError(f"no route {method.upper()} {path} in the document") from None
    return op
