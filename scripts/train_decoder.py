"""Train a small byte-level GPT on the standard library's docstrings and export it to ONNX with its KV cache.

    pip install torch==2.13.0 onnxscript && pip install -e . && python scripts/train_decoder.py OUT.onnx

The test model of language-model quantization (docs/quantization.md, section 2b): a pre-norm decoder (learned
token and position embeddings, causal self-attention, GELU feed-forward, a final LayerNorm and a linear head
onto the 256 byte values). Text: every docstring of the Python modules in this interpreter's standard library
(`corpus`), in path order, as UTF-8 bytes; one in HELD_OUT_EVERY is held out for perplexity.

The ONNX graph takes "tokens" int64 [batch, count] and, per layer L, "past_key_L" and "past_value_L" float32
[batch, heads, past, depth] (past may be 0), and gives "logits" [batch, count, 256] and "present_key_L",
"present_value_L" [batch, heads, past + count, depth]: the prompt runs with an empty cache, each next token with
the cache the previous call returned. Batch, count and past are dynamic; past + count is at most the context.
Deterministic on one machine (one seed, one thread count).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

VOCAB = 256
# One document in this many is held out (by its place in path order), never trained on.
HELD_OUT_EVERY = 20


@dataclasses.dataclass(frozen=True)
class Shape:
    """A decoder's size: width, layers, heads, feed-forward width and the longest sequence it takes."""

    width: int
    layers: int
    heads: int
    hidden: int
    context: int


# The benchmark's decoder (7.2 M parameters, 28 MiB in float32) and the tests' one.
BENCHMARK = Shape(width=384, layers=4, heads=6, hidden=1536, context=128)
TINY = Shape(width=32, layers=2, heads=2, hidden=64, context=32)
# AdamW's peak learning rate, reached after WARMUP steps, then a cosine down to 0.
LEARNING_RATE, WARMUP = 1e-3, 50
# The benchmark decoder's training: 800 steps of 16 runs of 129 bytes, about one pass over the text.
STEPS = 800


class Attention(nn.Module):
    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.heads, self.depth = shape.heads, shape.width // shape.heads
        self.query, self.key, self.value, self.out = (nn.Linear(shape.width, shape.width) for _ in range(4))

    def forward(self, x: torch.Tensor, past_key: torch.Tensor, past_value: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, count, width = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, count, self.heads, self.depth).transpose(1, 2)

        key = torch.cat([past_key, split(self.key(x))], dim=2)
        value = torch.cat([past_value, split(self.value(x))], dim=2)
        scores = split(self.query(x)) @ key.transpose(-1, -2) / math.sqrt(self.depth)
        total = key.shape[2]
        # Query i sits at place total - count + i and sees the keys up to that place.
        hidden = torch.arange(total)[None, :] > torch.arange(count)[:, None] + (total - count)
        scores = scores.masked_fill(hidden, torch.finfo(torch.float32).min)
        mixed = (torch.softmax(scores, dim=-1) @ value).transpose(1, 2).reshape(batch, count, width)
        return self.out(mixed), key, value


class Layer(nn.Module):
    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(shape.width), nn.LayerNorm(shape.width)
        self.attention = Attention(shape)
        self.feed_forward = nn.Sequential(nn.Linear(shape.width, shape.hidden), nn.GELU(),
                                          nn.Linear(shape.hidden, shape.width))

    def forward(self, x: torch.Tensor, past_key: torch.Tensor, past_value: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mixed, key, value = self.attention(self.norm1(x), past_key, past_value)
        x = x + mixed
        return x + self.feed_forward(self.norm2(x)), key, value


class Decoder(nn.Module):
    """forward(tokens, past_key_0, past_value_0, ...) -> (logits, present_key_0, present_value_0, ...)."""

    def __init__(self, shape: Shape) -> None:
        super().__init__()
        self.shape = shape
        self.tokens = nn.Embedding(VOCAB, shape.width)
        self.positions = nn.Embedding(shape.context, shape.width)
        self.layers = nn.ModuleList(Layer(shape) for _ in range(shape.layers))
        self.norm = nn.LayerNorm(shape.width)
        self.head = nn.Linear(shape.width, VOCAB)

    def forward(self, tokens: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        start = past[0].shape[2]
        x = self.tokens(tokens) + self.positions(torch.arange(tokens.shape[1]) + start)
        present: list[torch.Tensor] = []
        for index, layer in enumerate(self.layers):
            x, key, value = layer(x, past[2 * index], past[2 * index + 1])
            present += [key, value]
        return (self.head(self.norm(x)), *present)

    def empty_cache(self, batch: int) -> list[torch.Tensor]:
        depth = self.shape.width // self.shape.heads
        return [torch.zeros(batch, self.shape.heads, 0, depth) for _ in range(2 * self.shape.layers)]


def corpus(files: int | None = None) -> tuple[bytes, bytes]:
    """(training text, held-out text): the docstrings of the standard library's modules (the first `files` of
    them in path order where given), documents in path order, one in HELD_OUT_EVERY held out; each document
    ends with a blank line."""
    train, held_out = [], []
    documents = 0
    paths = [path for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
             if "test" not in path.parts and "site-packages" not in path.parts]
    for path in paths[:files]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_docstring(node)
                if text and len(text) >= 40:
                    documents += 1
                    (held_out if documents % HELD_OUT_EVERY == 0 else train).append(text + "\n\n")
    return "".join(train).encode(), "".join(held_out).encode()


def windows(text: bytes, length: int, count: int, seed: int) -> np.ndarray:
    """`count` random runs of `length` bytes of `text` (int64 [count, length])."""
    data = np.frombuffer(text, np.uint8)
    starts = np.random.default_rng(seed).integers(0, len(data) - length, count)
    return np.stack([data[start:start + length] for start in starts]).astype(np.int64)


def train(shape: Shape, text: bytes, steps: int, batch: int = 16, seed: int = 0,
          learning_rate: float = LEARNING_RATE) -> Decoder:
    """The decoder after `steps` AdamW steps (learning rate up to `learning_rate` in WARMUP steps, then a cosine
    down to 0) on runs of `shape.context + 1` bytes of `text`, predicting each next byte."""
    torch.manual_seed(seed)
    model = Decoder(shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.99), weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / WARMUP) * 0.5 * (
        1 + math.cos(math.pi * step / steps)))
    runs = torch.from_numpy(windows(text, shape.context + 1, steps * batch, seed + 1))
    model.train()
    for step in range(steps):
        run = runs[step * batch:(step + 1) * batch]
        logits = model(run[:, :-1], *model.empty_cache(batch))[0]
        loss = nn.functional.cross_entropy(logits.reshape(-1, VOCAB), run[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    return model.eval()


def input_names(shape: Shape) -> list[str]:
    return ["tokens"] + [f"past_{kind}_{layer}" for layer in range(shape.layers) for kind in ("key", "value")]


def feeds(shape: Shape, tokens: np.ndarray, cache: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The ONNX model's inputs for `tokens` [batch, count] after `cache` (the present tensors a previous call
    returned, in output order), or after an empty cache (past 0) where None."""
    if cache is None:
        depth = shape.width // shape.heads
        cache = [np.zeros((len(tokens), shape.heads, 0, depth), np.float32) for _ in range(2 * shape.layers)]
    return {"tokens": tokens, **dict(zip(input_names(shape)[1:], cache))}


def output_names(shape: Shape) -> list[str]:
    return ["logits"] + [f"present_{kind}_{layer}" for layer in range(shape.layers) for kind in ("key", "value")]


def export(model: Decoder, path: Path) -> None:
    """`model` as ONNX (opset 18) at `path`, batch, count and past dynamic (module docstring)."""
    from eightbit.frontends.pytorch import quiet_exporter

    shape = model.shape
    batch, count, past = torch.export.Dim("batch"), torch.export.Dim("count"), torch.export.Dim("past")
    cache = {0: batch, 2: past}
    example = (torch.zeros(2, 3, dtype=torch.int64),
               *(torch.zeros(2, shape.heads, 4, shape.width // shape.heads) for _ in range(2 * shape.layers)))
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(model, example, dynamo=True, verbose=False, input_names=input_names(shape),
                                    output_names=output_names(shape), opset_version=18,
                                    dynamic_shapes=({0: batch, 1: count}, tuple(cache for _ in example[1:])))
    program.save(str(path))


def perplexity(logits: np.ndarray, tokens: np.ndarray) -> float:
    """exp of the mean cross-entropy of predicting tokens[:, 1:] from logits[:, :-1] (per byte)."""
    shifted = logits[:, :-1].astype(np.float64)
    shifted -= shifted.max(axis=-1, keepdims=True)
    log_probability = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    picked = np.take_along_axis(log_probability, tokens[:, 1:, None], axis=-1)
    return float(np.exp(-picked.mean()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--tiny", action="store_true", help="the tests' shape instead of the benchmark's")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    text, _ = corpus()
    export(train(TINY if args.tiny else BENCHMARK, text, args.steps), args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
