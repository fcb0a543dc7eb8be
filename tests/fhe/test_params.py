import math

import pytest

from fhe.params import MAX_LOG_QP_128, CKKSParameters, ParameterError, SecurityError, preset, preset_names
from fhe.primes import is_prime


@pytest.mark.parametrize("name", preset_names(include_toy=False))
def test_secure_presets_meet_the_128_bit_bound(name):
    p = preset(name)
    assert p.is_secure
    assert p.log_qp <= MAX_LOG_QP_128[p.n]


@pytest.mark.parametrize("name", preset_names())
def test_primes_are_ntt_friendly_distinct_and_sized(name):
    p = preset(name, allow_insecure=True)
    assert len(set(p.primes)) == len(p.primes)
    pairs = {lvl - i for lvl in range(p.max_level, p.boot_region_bottom - 1, -2) for i in (0, 1)} \
        if p.boot_levels else set()
    for i, (q, bits) in enumerate(zip(p.primes, p.q_bits + p.p_bits)):
        assert is_prime(q) and (q - 1) % (2 * p.n) == 0 and q < 2 ** 51
        # scaling primes sit next to the scale (possibly just above 2^bits); log QP counts them exactly;
        # in a composite region it is the pair's product that sits next to the region's scale
        assert abs(math.log2(q) - bits) < (0.1 if i in pairs else 0.01)
    for lvl in range(p.max_level, p.boot_region_bottom - 1, -2):
        assert abs(math.log2(p.rescale_modulus(lvl)) - p.boot_scale_bits) < 0.1
        assert abs(math.log2(p.scale_at(lvl)) - p.boot_scale_bits) < 0.1


def test_level_scales_stay_close_to_the_nominal_scale():
    p = preset("n16")
    for s in p.level_scales:
        assert abs(math.log2(s) - p.scale_bits) < 1e-3


def test_too_much_modulus_names_the_bound():
    with pytest.raises(SecurityError, match=r"exceeds the 128-bit security bound 438 for N = 2\^14"):
        CKKSParameters(14, (50,) + (40,) * 9, (50,), 3, 40)


def test_toy_preset_needs_explicit_request():
    with pytest.raises(SecurityError, match="insecure"):
        preset("toy-n10")
    with pytest.raises(SecurityError, match="toy-"):
        CKKSParameters(10, (50, 40), (50,), 1, 40, name="quick", insecure=True)


def test_bad_shapes_are_explained():
    with pytest.raises(ParameterError, match="dnum"):
        CKKSParameters(14, (50, 40), (50,), 5, 40)
    with pytest.raises(ParameterError, match="20..50 bits"):
        CKKSParameters(14, (60, 40), (50,), 1, 40)
    with pytest.raises(ParameterError, match="unknown preset"):
        preset("n99")


def test_digits_cover_the_level():
    p = preset("n16")
    for lvl in (29, 17, 3, 0):
        flat = [i for d in p.digits(lvl) for i in d]
        assert flat == list(range(lvl + 1))
        assert all(len(d) <= p.alpha for d in p.digits(lvl))


def test_sparse_secret_weight_has_a_floor_on_secure_sets():
    """Bootstrapping's ephemeral sparse secret: weight >= 32 on secure sets (the regime the cited estimate
    covers: N = 2^16, log2(q_0 p_0) <= 121); toy sets may go lower; 1 <= h <= N always."""
    from fhe.circuits.bootstrapping import BootstrapParameters
    from fhe.params import MIN_SPARSE_HAMMING_WEIGHT, check_sparse_secret, sparse_secret_log2_count

    assert MIN_SPARSE_HAMMING_WEIGHT == 32
    assert sparse_secret_log2_count(1 << 16, 1) == pytest.approx(17.0)       # 2N secrets: found at once
    assert sparse_secret_log2_count(1 << 16, 32) == pytest.approx(426.3, abs=0.1)
    boot = preset("n16-boot")
    check_sparse_secret(boot, 32)
    for h in (1, 31):
        with pytest.raises(SecurityError, match=f"h={h} is below the minimum 32"):
            check_sparse_secret(boot, h)
    with pytest.raises(SecurityError, match="below the minimum 32"):   # refused before any key is made
        BootstrapParameters(hamming_weight=1).key_request(boot)
    with pytest.raises(SecurityError, match="no security estimate covers"):
        check_sparse_secret(preset("n13"), 32)
    toy = preset("toy-n10-boot", allow_insecure=True)
    check_sparse_secret(toy, 1)
    for h in (0, toy.n + 1):
        with pytest.raises(ParameterError, match="between 1 and N"):
            check_sparse_secret(toy, h)


def test_key_generator_refuses_a_weak_sparse_secret():
    """The library gate: KeyGenerator.encapsulation_keys on a secure set refuses h < 32 before any work."""
    from fhe.ckks.context import CKKSContext
    from fhe.rlwe.keys import KeyGenerator

    ctx = CKKSContext.from_preset("n13")
    kg = KeyGenerator(ctx.params, ctx.ring)
    with pytest.raises(SecurityError, match="below the minimum"):
        kg.evaluation_keys(relin=False, encapsulation=True, hamming_weight=1)


@pytest.mark.parametrize("name,levels,dnum", [("n16-boot-11", 11, 6), ("n16-boot-13", 13, 9)])
def test_the_level_budget_is_a_choice(name, levels, dnum):
    """Bootstrapping presets with more levels left: the same composite region as n16-boot (so the same
    circuit), more application levels paid for by more key-switching digits (a smaller P), still within
    the 128-bit bound, P covering every digit, and the sparse-secret encapsulation in the cited regime."""
    from fhe.circuits.bootstrapping import BootstrapParameters
    from fhe.params import check_sparse_secret

    base, p = preset("n16-boot"), preset(name)
    assert p.is_secure and p.log_qp <= MAX_LOG_QP_128[p.n] and p.dnum == dnum
    assert (p.boot_levels, p.boot_scale_bits, p.scale_bits) == (base.boot_levels, base.boot_scale_bits, base.scale_bits)
    assert p.q_bits[-2 * p.boot_levels:] == base.q_bits[-2 * base.boot_levels:]
    assert p.application_top == levels and BootstrapParameters().levels(p)["output"] == levels
    p_bits = sum(math.log2(q) for q in p.p_primes)
    assert all(sum(math.log2(p.primes[i]) for i in d) <= p_bits + 1 for d in p.digits(p.max_level))
    check_sparse_secret(p, 32)
    assert math.log2(p.q_primes[0] * p.p_primes[0]) <= 121
    # the application's scale is kept level by level below the region, as on n16-boot
    assert all(abs(math.log2(p.scale_at(lv)) - 40) < 0.01 for lv in range(levels + 1))
    toy = preset(f"toy-n10-boot-{levels}", allow_insecure=True)
    assert (toy.q_bits, toy.p_bits, toy.dnum, toy.boot_levels) == (p.q_bits, p.p_bits, p.dnum, p.boot_levels)
    with pytest.raises(SecurityError, match="insecure"):
        preset(f"toy-n10-boot-{levels}")
