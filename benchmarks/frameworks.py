"""PyTorch in: the MTCNN face detector's three networks, quantized from the torch modules by one call each,
beside ONNX Runtime's quantizer on the same exported ONNX model.

    pip install -e ".[dev,bench]" && python -m benchmarks.frameworks      # writes BENCHMARKS.md
    python -m benchmarks.frameworks --models rnet --no-write                # a subset, table on stdout

The weights are the trained ones the `facenet-pytorch==2.6.0` wheel ships (MIT licence; downloaded with pip,
no dependencies, into benchmarks/.cache: the wheel needs torchvision, which this harness does not install, so
the three networks are defined here from the MTCNN paper's layer list, under the wheel's parameter names).
The images come from the `scikit-image==0.25.2` wheel's data (read from the wheel, not installed): its
`lfw_subset.npy`, 100 faces and 100 non-face patches of 25x25 grey pixels, resized to each network's crop
(RNet 24x24, ONet 48x48); and for PNet, the fully convolutional first stage, 128x128 windows of its
`astronaut.png`, `chelsea.png` and `coffee.png`, at several scales.

Per network: eightbit's default (`eightbit.quantize(module, samples, example_inputs=...)`), ORT's
`quantize_static` (QDQ, u8 activations, s8 per-channel weights, min/max) and NNCF's `nncf.quantize` (its
defaults) on the ONNX model the same export gives, all on the same 32 calibration samples and run in ONNX
Runtime; every time includes the module's export (the exporter runs once, untimed, before). Figures on the
other samples: the worst output SQNR; the face decision's agreement with the float model's (face probability
above MTCNN's thresholds, 0.6 for each position of PNet's map, 0.7 for RNet's and ONet's crops); for RNet and
ONet, the float model's own accuracy on the face/non-face labels. Latency: batch 1, ONNX Runtime, 2 threads,
float and int8 timed in alternating blocks (medians).
"""

from __future__ import annotations

import io
import platform
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import eightbit
from benchmarks.models import CACHE
from benchmarks.sections import table_harness
from eightbit.api import load_samples, onnx_of
from eightbit.backends import OrtSession
from eightbit.backends.peer import quantize_with_onnxruntime
from eightbit.ir import save_model
from eightbit.isa import cpu_features
from eightbit.measure.latency import interleaved
from eightbit.measure.metrics import Agreement

FACENET_WHEEL = ("facenet-pytorch", "2.6.0")
SKIMAGE_WHEEL = ("scikit-image", "0.25.2")
NETWORKS = ["pnet", "rnet", "onet"]
THRESHOLDS = {"pnet": 0.6, "rnet": 0.7, "onet": 0.7}
CALIBRATION = 32


def _wheel(name: str, version: str) -> Path:
    """The pinned wheel, downloaded once with pip (no dependencies)."""
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(CACHE.glob(pattern))
    if not found:
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", f"{name}=={version}", "-d",
                        str(CACHE)], check=True)
        found = sorted(CACHE.glob(pattern))
    return found[0]


def _read(wheel: Path, member: str) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        return archive.read(member)


class PNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1, self.prelu1, self.pool1 = nn.Conv2d(3, 10, 3), nn.PReLU(10), nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, image):
        x = self.prelu1(self.conv1(image))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(self.pool1(x)))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1, self.prelu1, self.pool1 = nn.Conv2d(3, 28, 3), nn.PReLU(28), nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2, self.pool2 = nn.Conv2d(28, 48, 3), nn.PReLU(48), nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, image):
        x = self.pool1(self.prelu1(self.conv1(image)))
        x = self.prelu3(self.conv3(self.pool2(self.prelu2(self.conv2(x)))))
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1, self.prelu1, self.pool1 = nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2, self.pool2 = nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3, self.pool3 = nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, image):
        x = self.pool1(self.prelu1(self.conv1(image)))
        x = self.pool3(self.prelu3(self.conv3(self.pool2(self.prelu2(self.conv2(x))))))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


def network(name: str) -> torch.nn.Module:
    """The trained network `name`, in eval mode."""
    module = {"pnet": PNet, "rnet": RNet, "onet": ONet}[name]()
    state = torch.load(io.BytesIO(_read(_wheel(*FACENET_WHEEL), f"facenet_pytorch/data/{name}.pt")),
                       weights_only=True)
    module.load_state_dict(state)
    return module.eval()


def _normalized(pixels: np.ndarray) -> np.ndarray:
    """RGB pixels in [0, 255], (N, H, W, 3), as MTCNN takes them: (x - 127.5) / 128, NCHW float32."""
    return ((pixels.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2).copy()


def _crops(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 200 patches of lfw_subset (faces first) at size x size, grey as RGB, and their labels (1: face)."""
    patches = np.load(io.BytesIO(_read(_wheel(*SKIMAGE_WHEEL), "skimage/data/lfw_subset.npy")))
    resized = [np.asarray(Image.fromarray((p * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR))
               for p in patches]
    grey = np.stack(resized)[..., None].repeat(3, axis=-1)
    return _normalized(grey), np.r_[np.ones(100), np.zeros(100)]


def _windows(count: int, seed: int) -> np.ndarray:
    """`count` 128x128 windows of scikit-image's photographs, each at a random scale and place."""
    wheel, rng = _wheel(*SKIMAGE_WHEEL), np.random.default_rng(seed)
    photos = [Image.open(io.BytesIO(_read(wheel, f"skimage/data/{name}"))).convert("RGB")
              for name in ("astronaut.png", "chelsea.png", "coffee.png")]
    windows = []
    for index in range(count):
        photo = photos[index % len(photos)]
        scale = rng.uniform(0.3, 1.0)
        size = (max(128, int(photo.width * scale)), max(128, int(photo.height * scale)))
        image = np.asarray(photo.resize(size, Image.BILINEAR))
        top, left = rng.integers(0, image.shape[0] - 127), rng.integers(0, image.shape[1] - 127)
        windows.append(image[top:top + 128, left:left + 128])
    return _normalized(np.stack(windows))


@dataclass(frozen=True)
class Data:
    calibration: np.ndarray
    held_out: np.ndarray
    labels: np.ndarray | None  # face (1) or not, of the held-out samples


def _data(name: str) -> Data:
    if name == "pnet":
        return Data(_windows(CALIBRATION, seed=0), _windows(16, seed=1), None)
    crops, labels = _crops(24 if name == "rnet" else 48)
    order = np.random.default_rng(0).permutation(len(crops))
    calibration, held_out = order[:CALIBRATION], order[CALIBRATION:]
    return Data(crops[calibration], crops[held_out], labels[held_out])


@dataclass(frozen=True)
class Scores:
    sqnr_db: float
    agreement: float
    float_accuracy: float | None
    latency: str
    speedup: float


def _nncf(float_path: Path, target: Path, data: Data) -> None:
    """NNCF's post-training quantization of the ONNX model (its defaults, every calibration sample)."""
    import nncf
    import onnx

    model = onnx.load(float_path)
    name = model.graph.input[0].name
    dataset = nncf.Dataset([row[None] for row in data.calibration], lambda row: {name: row})
    onnx.save(nncf.quantize(model, dataset, subset_size=len(data.calibration)), target)


def _faces(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    return probabilities[:, 1] > threshold  # (N,) for crops, (N, H, W) for PNet's map


def _scores(float_path: Path, int8_path: Path, data: Data, name: str) -> Scores:
    reference, test = OrtSession(float_path), OrtSession(int8_path)
    feeds = {reference.input_names[0]: data.held_out}
    expected, got = reference.run(feeds), test.run(feeds)
    worst = []
    for output in reference.output_names:
        metric = Agreement()
        metric.add(expected[output], got[output])
        worst.append(metric.sqnr_db)
    probability = reference.output_names[-1]  # each network's last output is the softmax
    float_faces = _faces(expected[probability], THRESHOLDS[name])
    int8_faces = _faces(got[probability], THRESHOLDS[name])
    accuracy = None if data.labels is None else float(np.mean(float_faces == (data.labels == 1)))
    one = {reference.input_names[0]: data.held_out[:1]}
    latency = interleaved(lambda: reference.run(one), lambda: test.run(one))
    reference.close()
    test.close()
    return Scores(min(worst), float(np.mean(float_faces == int8_faces)), accuracy,
                  f"{latency.first_ms:.2f} / {latency.second_ms:.2f}", latency.speedup)


def _row(name: str, who: str, scores: Scores, seconds: float, ratio: float) -> str:
    accuracy = "–" if scores.float_accuracy is None else f"{scores.float_accuracy:.3f}"
    return (f"| {name} | {who} | {seconds:.1f} | {scores.sqnr_db:.1f} | {scores.agreement:.4f} | {accuracy} | "
            f"{ratio:.3f} | {scores.latency} | **{scores.speedup:.2f}x** |")


def run(names: list[str]) -> list[str]:
    rows, notes = [], []
    for name in names:
        module, data = network(name), _data(name)
        example = (torch.from_numpy(data.calibration[:2]),)
        with tempfile.TemporaryDirectory(prefix="eightbit-frameworks-") as scratch:
            folder = Path(scratch)
            exported = onnx_of(module, example)  # once untimed: the exporter's first call loads its own modules
            float_path = save_model(exported, folder / "float.onnx")
            start = time.perf_counter()
            eightbit.quantize(module, data.calibration, example_inputs=example, output=folder / "eightbit.onnx")
            ours_s = time.perf_counter() - start
            start = time.perf_counter()
            again = save_model(onnx_of(module, example), folder / "again.onnx")
            export_s = time.perf_counter() - start
            quantize_with_onnxruntime(again, folder / "ort.onnx", load_samples(data.calibration, exported))
            theirs_s = time.perf_counter() - start
            start = time.perf_counter()
            _nncf(save_model(onnx_of(module, example), folder / "again_nncf.onnx"), folder / "nncf.onnx", data)
            nncf_s = time.perf_counter() - start
            size = float_path.stat().st_size
            for who, path, seconds in (("eightbit", folder / "eightbit.onnx", ours_s),
                                       ("ORT quantize_static", folder / "ort.onnx", theirs_s),
                                       ("NNCF", folder / "nncf.onnx", nncf_s)):
                rows.append(_row(name, who, _scores(float_path, path, data, name), seconds,
                                 path.stat().st_size / size))
                print(rows[-1], flush=True)
            notes.append(f"{name}: of these times, the export to ONNX took {export_s:.1f} s")
    header = [
        f"Machine: {platform.processor() or platform.machine()}, {cpu_features().summary()}; eightbit "
        f"{eightbit.__version__}, PyTorch {torch.__version__}; {CALIBRATION} calibration samples.",
        "",
        "| network | quantizer | quantize s | worst output SQNR dB | face decision agreement | float accuracy | "
        "size ratio | fp32 / int8 ms | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    return header + rows + [""] + [f"- {note}" for note in notes]


SECTION = """## PyTorch in: MTCNN's three networks

Made by `{command}` (see benchmarks/frameworks.py for the data and what is measured).

{table}
"""


def main(argv: list[str] | None = None) -> int:
    return table_harness(argv, __doc__, NETWORKS, run, "framework-input", SECTION)


if __name__ == "__main__":
    sys.exit(main())
