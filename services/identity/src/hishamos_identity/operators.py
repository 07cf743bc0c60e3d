"""Platform operators: people who run HishamOS itself, not a tenant, and act across organizations.

An operator proves itself with a credential configured in identity and gets a short-lived token that
belongs to no organization and carries only the operator permissions. No tenant role can hold those
(hishamos_kit.roles leaves them out of the predefined roles, custom roles refuse them), so no tenant admin
can suspend an organization, reactivate their own, or raise their own quotas.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from hishamos.identity.v1 import auth_pb2 as pb
from hishamos_identity.keys import KeyStore
from hishamos_identity.settings import IdentitySettings
from hishamos_identity.tokens import credential_holder, sign
from hishamos_kit import api
from hishamos_kit.auth import NO_ORGANIZATION, OPERATOR_PREFIX

log = logging.getLogger("hishamos.identity.operators")


class OperatorTokens:
    def __init__(self, keys: KeyStore, settings: IdentitySettings) -> None:
        self._keys = keys
        self._settings = settings

    async def issue(self, metadata: Mapping[str, str]) -> pb.IssueOperatorTokenResponse:
        operator = credential_holder(
            metadata, "x-operator-credential", self._settings.operator_credentials, "OPERATOR_CREDENTIAL_INVALID"
        )
        lifetime = self._settings.operator_token_seconds
        permissions = sorted(api.operator_permissions())
        subject = f"{OPERATOR_PREFIX}{operator}"
        token = await sign(self._keys, self._settings, subject, NO_ORGANIZATION, permissions, lifetime)
        # Not in an organization's audit log (it has none); what the operator then does is.
        log.info("operator token issued", extra={"operator": subject})
        return pb.IssueOperatorTokenResponse(access_token=token, expires_in=lifetime)
