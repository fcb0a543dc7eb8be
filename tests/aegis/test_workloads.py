import pytest

from aegis.hardware import HardwareError, load_hardware
from aegis.packing import Packing
from aegis.workloads import MODELS, Workload, WorkloadError, get_model
from fhe.params import SecurityError


def test_published_shapes():
    assert (MODELS["bert-base"].d_model, MODELS["bert-base"].heads, MODELS["bert-base"].d_ff,
            MODELS["bert-base"].layers) == (768, 12, 3072, 12)
    assert (MODELS["minilm-l6"].d_model, MODELS["minilm-l6"].d_ff, MODELS["minilm-l6"].layers) == (384, 1536, 6)
    assert MODELS["gpt2-small"].causal and MODELS["gpt2-small"].pre_norm
    assert MODELS["bert-large"].head_dim == 64


def test_bad_names_list_valid_ones():
    with pytest.raises(WorkloadError, match="valid models: bert-base"):
        get_model("bert")
    with pytest.raises(WorkloadError, match="only 'tiny' is configurable"):
        get_model("bert-base", d_model=512)
    assert get_model("minilm-l6", layers=2).layers == 2          # a published model truncated to K layers
    with pytest.raises(WorkloadError, match="must be 1..6"):
        get_model("minilm-l6", layers=7)
    with pytest.raises(WorkloadError, match="valid: on_the_fly, encoded"):
        Workload(get_model("tiny"), 16, weights="lazy")
    with pytest.raises(WorkloadError, match="valid: n13"):
        Workload(get_model("tiny"), 16, params_name="n99")
    with pytest.raises(HardwareError, match="valid: .*h100-sxm"):
        load_hardware("h101")


def test_secure_by_default_and_toy_refused():
    wl = Workload(get_model("tiny"), 16)
    assert wl.params().is_secure
    with pytest.raises(SecurityError, match="insecure"):
        Workload(get_model("tiny"), 16, params_name="toy-n10").params()


def test_bad_hardware_file_names_field(tmp_path):
    f = tmp_path / "hw.json"
    f.write_text('{"device": {"hbm_bytes_per_s": 1}}')
    with pytest.raises(HardwareError, match="device.memory_bytes"):
        load_hardware(str(f))
    assert load_hardware("h100-sxm").memory_bytes == 80 * 10 ** 9


def test_packing_geometry():
    pk = Packing.for_model(MODELS["bert-base"], 32768, 2048)
    assert (pk.token_block, pk.channel_block, pk.heads_per_tile, pk.token_blocks) == (128, 256, 4, 16)
    assert pk.channel_tiles(768) == 3 and pk.channel_tiles(3072) == 12
    assert pk.token_block * pk.channel_block == 32768
    assert pk.score_cts_per_pair == 2
    assert list(pk.block_tokens(15)) == list(range(1920, 2048))
    with pytest.raises(WorkloadError, match="whole heads"):
        Packing.for_model(MODELS["bert-base"], 32768, 2048, token_block=1024)
    with pytest.raises(WorkloadError, match="power of two"):
        Packing.for_model(MODELS["bert-base"], 32768, 2048, token_block=100)
