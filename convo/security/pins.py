"""PINs: hashing and the weak-PIN rules.

PIN hashing: ``argon2id(HMAC-SHA256(pepper, pin))``. The pepper
(``CONVO_PIN_PEPPER``) never leaves the server's configuration, so a stolen
database alone cannot be brute-forced even though PINs have only 10^4-10^6
values; argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane) makes each
guess expensive when both leak. Verification is argon2's own constant-time
comparison; a missing hash is checked against a dummy hash so the time taken
does not say whether a PIN is set.

Nothing in this module logs its inputs.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from functools import lru_cache

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

DEV_PEPPER = "convo-development-pepper-not-for-production"
MIN_PRODUCTION_PEPPER = 16


class PinHasher:
    def __init__(self, pepper: str, memory_kib: int = 19456, time_cost: int = 2):
        self._key = (pepper or DEV_PEPPER).encode()
        self._ph = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1,
                                  hash_len=32, salt_len=16, type=Type.ID)
        self._dummy = self._ph.hash(b"\0" * 32)

    @classmethod
    def from_settings(cls, settings) -> "PinHasher":
        return _hasher(settings.pin_pepper, settings.pin_argon2_memory_kib, settings.pin_argon2_time_cost)

    def _peppered(self, pin: str) -> bytes:
        return hmac.new(self._key, pin.encode(), hashlib.sha256).digest()

    def hash(self, pin: str) -> str:
        return self._ph.hash(self._peppered(pin))

    def verify(self, encoded: str | None, pin: str) -> bool:
        """Constant-time check; False for a wrong PIN, a missing or a corrupt hash."""
        try:
            return self._ph.verify(encoded or self._dummy, self._peppered(pin)) and encoded is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, encoded: str) -> bool:
        try:
            return self._ph.check_needs_rehash(encoded)
        except InvalidHashError:
            return True


@lru_cache(maxsize=8)
def _hasher(pepper: str, memory_kib: int, time_cost: int) -> PinHasher:
    return PinHasher(pepper, memory_kib, time_cost)


# --------------------------------------------------------------------------- weak PINs
COMMON_PINS = frozenset({"1212", "1122", "2580", "0852", "1004", "2000", "6969", "1313", "4545", "1010",
                         "2020", "5683", "0007", "121212", "123123", "112233", "147258", "159753",
                         "654321", "696969", "101010"})


def weak_pin_reason(pin: str, phone: str | None = None, birth_year: int | None = None) -> str | None:
    """Why ``pin`` is too easy to guess, or None. Reasons: same, sequence, common, birth_year, phone."""
    if len(set(pin)) == 1:
        return "same"
    steps = {(int(b) - int(a)) % 10 for a, b in zip(pin, pin[1:])}
    if steps in ({1}, {9}):                         # 1234, 4321, 7890, 3210
        return "sequence"
    if pin in COMMON_PINS:
        return "common"
    if birth_year and len(pin) == 4 and pin == f"{birth_year:04d}":
        return "birth_year"
    if birth_year and len(pin) >= 4 and f"{birth_year:04d}" in pin:
        return "birth_year"
    digits = re.sub(r"\D", "", phone or "")
    if digits and digits.endswith(pin):
        return "phone"
    return None
