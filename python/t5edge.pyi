"""t5edge: a hand-optimized CPU inference engine for the T5 family, from Python.

Type stubs of the native module (python/src). Every method releases the GIL
while it computes; one T5 object can be used from several threads at once.
"""

import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal, final, overload

import numpy as np
import numpy.typing as npt

__version__: str

_Ids = Sequence[int] | npt.NDArray[np.integer[Any]]
_Input = str | _Ids
_PathLike = str | os.PathLike[str]
_Dtype = Literal["f32", "f16", "bf16", "int8"]

class Error(Exception):
    """Base class of every error t5edge raises; the message is the library's."""

class RequestError(Error, ValueError):
    """A bad argument or request: an unknown option, a value out of range, a token id the model lacks."""

class FileError(Error, OSError):
    """A checkpoint, tokenizer or output file that cannot be read, written or understood."""

class NotFoundError(FileError, FileNotFoundError):
    """A model directory, hub id or file that does not exist."""

class ExistsError(FileError, FileExistsError):
    """An output that exists already (pass force=True to replace it)."""

class InternalError(Error):
    """A panic inside t5edge: a bug, please report it. The interpreter and other models carry on."""

@final
class Generation:
    """What `T5.generate` made for one input, with return_ids=True or return_scores=True."""

    text: str | None
    """Text of the best sequence (None without a tokenizer)."""
    ids: list[int]
    """_Ids of the best sequence, without the decoder start token."""
    texts: list[str] | None
    """Text of every returned sequence (None without a tokenizer)."""
    sequences: list[list[int]]
    """_Ids of every returned sequence, best first."""
    scores: list[float] | None
    """Beam search only: HF's sequences_scores, one per sequence."""
    input_ids: list[int]
    """The input's token ids."""

@final
class Score:
    """log p(target | source): one value per target token and their sum."""

    token_logprobs: npt.NDArray[np.float32]
    logprob: float

@final
class GenerateStream(Iterator[str]):
    """Text pieces as tokens are chosen; closing or dropping it stops the decode."""

    def __iter__(self) -> GenerateStream: ...
    def __next__(self) -> str: ...
    def close(self) -> None:
        """Stops the decode (at its next token) and ends the iteration."""
    def __enter__(self) -> GenerateStream: ...
    def __exit__(self, *args: object) -> bool: ...

@final
class Tokenizer:
    """The checkpoint's tokenizer: encode appends </s> as HF's T5 tokenizer does; decode skips special tokens."""

    @property
    def vocab_size(self) -> int: ...
    @overload
    def encode(self, text: str, /) -> list[int]: ...  # type: ignore[overload-overlap]
    @overload
    def encode(self, text: Sequence[str], /) -> list[list[int]]: ...
    @overload
    def decode(self, ids: _Ids, /) -> str: ...
    @overload
    def decode(self, ids: Sequence[_Ids], /) -> list[str]: ...
    def id_to_token(self, id: int) -> str | None: ...

@final
class T5:
    """A T5 checkpoint loaded for inference.

    model: a Hugging Face T5 checkpoint directory, a directory written by
    t5edge.quantize, or a hub id (org/name) in the local Hugging Face cache.
    Without model or preset: a synthetic t5-efficient-tiny-nl2 with random
    weights (gibberish text), written to the cache once.
    dtype: "f32", "f16" or "int8" (default: as stored; int8 gives the FFN
    output projections 16-bit activations). exact=True (with dtype "int8"):
    certified greedy picks equal to full precision. int8_ffn_out=True (with
    dtype "int8"): int8 activations there too, the whole model in int8.
    threads=N: a pool of N threads for this model (1: each call on its
    caller's thread alone); None: the process-wide pool.
    """

    def __new__(
        cls,
        model: _PathLike | None = None,
        *,
        dtype: _Dtype | None = None,
        exact: bool = False,
        int8_ffn_out: bool = False,
        threads: int | None = None,
        mmap: bool = True,
        preset: str | None = None,
    ) -> T5: ...
    @overload
    def generate(  # type: ignore[overload-overlap]
        self,
        inputs: _Input,
        /,
        *,
        max_new_tokens: int = 32,
        min_new_tokens: int = 0,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        early_stopping: bool | Literal["never"] = False,
        no_repeat_ngram_size: int = 0,
        num_return_sequences: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 50,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        eos_token_id: int | None = None,
        return_ids: Literal[False] = False,
        return_scores: Literal[False] = False,
    ) -> str | list[str]: ...
    @overload
    def generate(  # type: ignore[overload-overlap]
        self,
        inputs: list[str] | list[_Ids],
        /,
        *,
        max_new_tokens: int = 32,
        min_new_tokens: int = 0,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        early_stopping: bool | Literal["never"] = False,
        no_repeat_ngram_size: int = 0,
        num_return_sequences: int = 1,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 50,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        eos_token_id: int | None = None,
        return_ids: Literal[False] = False,
        return_scores: Literal[False] = False,
    ) -> list[str] | list[list[str]]: ...
    @overload
    def generate(
        self,
        inputs: _Input,
        /,
        *,
        return_ids: bool = ...,
        return_scores: bool = ...,
        **options: Any,
    ) -> Generation: ...
    @overload
    def generate(
        self,
        inputs: list[str] | list[_Ids],
        /,
        *,
        return_ids: bool = ...,
        return_scores: bool = ...,
        **options: Any,
    ) -> list[Generation]: ...
    def generate_stream(
        self,
        input: _Input,
        /,
        *,
        max_new_tokens: int = 32,
        min_new_tokens: int = 0,
        num_beams: int = 1,
        length_penalty: float = 1.0,
        early_stopping: bool | Literal["never"] = False,
        no_repeat_ngram_size: int = 0,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int = 50,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        eos_token_id: int | None = None,
    ) -> GenerateStream: ...
    @overload
    def embed(self, inputs: _Input, /, *, normalize: bool = False) -> npt.NDArray[np.float32]:
        """float32 [d_model]: the mask-aware mean of the encoder states."""
    @overload
    def embed(self, inputs: list[str] | list[_Ids], /, *, normalize: bool = False) -> npt.NDArray[np.float32]:
        """float32 [n, d_model]."""
    def encode(
        self, inputs: _Input | list[str] | list[_Ids], /
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """(last_hidden_state, attention_mask): [len, d_model] and [len] for one
        input, [n, max_len, d_model] and [n, max_len] (zero-padded) for a list."""
    @overload
    def score(self, source: _Input, target: _Input, /) -> Score: ...  # type: ignore[overload-overlap]
    @overload
    def score(self, source: list[str] | list[_Ids], target: list[str] | list[_Ids], /) -> list[Score]: ...
    def rerank(
        self,
        query: str,
        documents: list[str],
        /,
        *,
        template: str | None = None,
        true_token: str | None = None,
        false_token: str | None = None,
    ) -> list[dict[str, Any]]:
        """Documents sorted by monoT5's p(true), best first: dicts with index, score, text."""
    @property
    def tokenizer(self) -> Tokenizer | None: ...
    @property
    def config(self) -> dict[str, Any]:
        """The config (Hugging Face's config.json fields)."""
    def num_parameters(self) -> int: ...
    @property
    def path(self) -> pathlib.Path: ...
    @property
    def dtype(self) -> _Dtype: ...
    @property
    def exact(self) -> bool: ...
    @property
    def threads(self) -> int: ...
    def inspect(self) -> dict[str, Any]: ...

def quantize(
    model: _PathLike,
    out: _PathLike,
    *,
    dtype: Literal["int8", "f16"] = "int8",
    group_size: int = 0,
    int8_ffn_out: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Writes a quantized checkpoint directory (atomically; refuses an existing out unless force=True)."""

def synth(
    out: _PathLike,
    *,
    preset: str = "t5-efficient-tiny-nl2",
    seed: int = 0,
    norm_jitter: float = 0.0,
    set: Sequence[str] = (),
    zero_pad_row: bool = False,
    encoder_only: bool = False,
    dtype: Literal["f32", "f16", "bf16"] | None = None,
    force: bool = False,
) -> pathlib.Path:
    """Writes a deterministic random-weight Hugging Face checkpoint (as `t5edge synth`)."""

def isa() -> str:
    """The kernels' instruction-set level in use."""
