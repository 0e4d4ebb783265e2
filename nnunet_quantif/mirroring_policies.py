"""Names of the test-time mirroring policies and their parser, shared by the inference code
(:mod:`nnunet_quantif.inference.mirroring`, which implements the policies) and the checks of a model's recorded
settings (:mod:`nnunet_quantif.heatmap_definition`)."""

from __future__ import annotations

from .errors import ConfigError

#: Mirroring policies accepted by :class:`MirroringPolicy` (``birth-fixed`` takes its flip count K, written
#: ``birth-fixed:K`` in a policy name).
POLICIES: tuple[str, ...] = ("paper", "budget", "all", "none", "authors", "birth-fixed")
#: The policy with a flip count, and the most flips it takes (every combination of three axes).
BIRTH_FIXED, BIRTH_MAX_FLIPS = "birth-fixed", 7


def parse_policy_name(name: str) -> tuple[str, int | None]:
    """``(policy, flips)`` of a policy name: ``"birth-fixed:3"`` -> ``("birth-fixed", 3)``, ``"all"`` ->
    ``("all", None)``.

    Raises
    ------
    ConfigError
        An unknown policy, ``birth-fixed`` without a count in 0 .. 7, or a count given to another policy.
    """
    text = str(name).strip()
    base, sep, count = text.partition(":")
    base = base.strip()
    if base not in POLICIES:
        raise ConfigError(f"unknown mirroring policy {name!r} (choose one of {', '.join(POLICIES)})")
    if base != BIRTH_FIXED:
        if sep:
            raise ConfigError(f"mirroring policy {base!r} takes no count, got {name!r}")
        return base, None
    try:
        k = int(count.strip())
    except ValueError:
        raise ConfigError(f"mirroring {BIRTH_FIXED} needs a flip count K in 0..{BIRTH_MAX_FLIPS} "
                          f"(--mirroring {BIRTH_FIXED} K), got {name!r}") from None
    if not 0 <= k <= BIRTH_MAX_FLIPS:
        raise ConfigError(f"mirroring {BIRTH_FIXED} flip count must be in 0..{BIRTH_MAX_FLIPS}, got {k}")
    return base, k
