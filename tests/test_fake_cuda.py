"""The training, validation and test steps on a GPU, checked without one: the module's parameters and
buffers and the batch are fake CUDA tensors (tests/fake_cuda.py), over a matrix of flags and under 32-bit,
16-bit and bfloat16 autocast. A CPU tensor meeting a CUDA one fails as on a GPU; the front end must
compute in float32 under autocast; a training step with the default flags must not make the host wait
for the GPU. Forward passes only (backward does not run on fake tensors); the GPU tier
(tests/test_gpu.py) runs the real thing where there is a GPU."""
import pytest
import torch
from conftest import TINY_NETWORK

from dataset.dcase25 import CLASSES, DEVICES
from dataset.demo import write_demo_impulse_responses
from helpers.setup.flags import build_parser, parse_args
from helpers.training import augmentation
from helpers.training import module as module_file
from helpers.training.builder import build_module
from helpers.training.teacher_file import TeacherLogits
from models.inference import store_for_submission
from models.multi_device import MultiDeviceModel

fake_cuda = pytest.importorskip("fake_cuda")
if fake_cuda.MISSING:
    pytest.skip(fake_cuda.MISSING, allow_module_level=True)

BATCH = 6
PRECISIONS = {"32": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}
TRAINING_DEVICES = ["a", "b", "c", "s1", "s2", "s3"]


@pytest.fixture(scope="module")
def responses_dir(tmp_path_factory):
    return write_demo_impulse_responses(tmp_path_factory.mktemp("irs") / "irs", count=3)


def filenames():
    return [f"audio/clip{i}.wav" for i in range(BATCH)]


def build(flags, responses_dir, monkeypatch):
    """A module of ``flags`` (one of the matrix's names) on the real CPU, as a training script builds it."""
    argv = {
        "defaults": [],
        "teacher+dir+mixup+masking": ["--dir_p", "1", "--dir_dir", str(responses_dir), "--mixup_alpha", "0.3",
                                      "--timem", "20", "--mixstyle_p", "1", *TINY_NETWORK],
        "qat": ["--quantize", "int8", *TINY_NETWORK],
        "cp_resnet": ["--model", "cp_resnet", *TINY_NETWORK],
        "passt": ["--model", "passt", "--pretrained", "none"],
        "stage-2 container": TINY_NETWORK,
    }[flags]
    stage = "device" if flags == "stage-2 container" else "base"
    args = parse_args(build_parser(stage, ""), argv)
    if flags == "passt":
        from test_passt import one_block_passt
        one_block_passt(monkeypatch)
    torch.manual_seed(0)
    module = build_module(vars(args))
    if flags == "stage-2 container":
        module = build_module(vars(args), model=MultiDeviceModel(module.model, TRAINING_DEVICES))
    if flags.startswith("teacher"):
        module.teacher = TeacherLogits(filenames(), torch.randn(BATCH, len(CLASSES)))
    return module.train()


def batch(gpu):
    waveform = gpu.tensor(0.1 * torch.randn(BATCH, 1, 44100))
    labels = gpu.tensor(torch.arange(BATCH) % len(CLASSES))
    return waveform, labels, [DEVICES[i % len(DEVICES)] for i in range(BATCH)], filenames()


def training_step(module, dtype):
    """The training loss of a batch on the fake GPU: ``(loss, the front end's dtypes, host syncs by kind)``:
    the dtypes of its spectrogram (where training masks) and of its output."""
    gpu, on_gpu = fake_cuda.on_fake_gpu(module)
    with on_gpu, fake_cuda.autocast_on_cuda(dtype):
        data = batch(gpu)
        frontend_dtype = {module.frontend.spectrogram(data[0]).dtype, module.frontend(data[0]).dtype}
        loss, parts = module.training_loss(data)
        module.record_nonfinite(loss)
        assert loss.device.type == "cuda" and all(p.device.type == "cuda" for p in parts.values())
    return loss, frontend_dtype, dict(gpu.syncs.counts)


MATRIX = ["defaults", "teacher+dir+mixup+masking", "qat", "cp_resnet", "passt", "stage-2 container"]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("flags", MATRIX)
def test_steps_on_a_fake_gpu(flags, precision, responses_dir, monkeypatch):
    dtype = PRECISIONS[precision]
    module = build(flags, responses_dir, monkeypatch)
    if flags != "stage-2 container":  # stage 2 trains each device's copy alone, not the container
        loss, frontend_dtype, syncs = training_step(module, dtype)
        assert frontend_dtype == {torch.float32}  # whatever the autocast
        assert loss.dtype == torch.float32
        # PaSST's package copies its mel filterbank to the GPU in each of the helper's three front-end passes
        expected = {"blocking copy between CPU and GPU": 3} if flags == "passt" else {}
        assert syncs == expected, f"the training step waits for the GPU: {syncs}"
    module.eval()
    gpu, on_gpu = fake_cuda.on_fake_gpu(module)
    with on_gpu, fake_cuda.autocast_on_cuda(dtype):
        waveform, _, devices, _ = batch(gpu)
        assert module(waveform, devices).shape == (BATCH, len(CLASSES))  # validation
    store_for_submission(module.model)  # the test's form: 16-bit parameters (int8 weights for QAT)
    gpu, on_gpu = fake_cuda.on_fake_gpu(module)
    with on_gpu, fake_cuda.autocast_on_cuda(dtype):
        waveform, _, devices, _ = batch(gpu)
        logits = module.inference_logits(waveform, devices)
        assert logits.device.type == "cuda" and logits.dtype == torch.float32


def test_a_cpu_tensor_in_the_mixup_weights_is_caught(responses_dir, monkeypatch):
    module = build("teacher+dir+mixup+masking", responses_dir, monkeypatch)
    real_mixup = augmentation.mixup

    def weights_on_the_cpu(waveform, alpha, p):
        mixed, mix = real_mixup(waveform, alpha, p)
        return mixed, augmentation.Mix(mix.partner, torch.full((len(mixed),), 0.5))

    monkeypatch.setattr(augmentation, "mixup", weights_on_the_cpu)
    with pytest.raises(RuntimeError, match="different devices"):
        training_step(module, None)


def test_teacher_logits_left_on_the_cpu_are_caught(responses_dir, monkeypatch):
    module = build("teacher+dir+mixup+masking", responses_dir, monkeypatch)
    monkeypatch.setattr(module_file, "to_device", lambda logits, device: logits)
    with pytest.raises(RuntimeError, match="different devices"):
        training_step(module, None)


def test_a_front_end_that_computes_in_half_precision_is_caught(responses_dir, monkeypatch):
    module = build("defaults", responses_dir, monkeypatch)
    monkeypatch.setattr(type(module.frontend), "spectrogram",
                        lambda self, waveform: self.mel(self.resample(waveform)))  # without full_precision
    _, frontend_dtype, _ = training_step(module, torch.float16)
    assert torch.float16 in frontend_dtype


def test_a_host_sync_in_the_step_is_counted(responses_dir, monkeypatch):
    module = build("defaults", responses_dir, monkeypatch)
    real = module.training_loss

    def with_a_check(batch):
        loss, parts = real(batch)
        if not torch.isfinite(loss):  # the check the step used to make
            raise AssertionError("not reached: the fake value reads as true")
        return loss, parts

    monkeypatch.setattr(module, "training_loss", with_a_check)
    _, _, syncs = training_step(module, None)
    assert syncs == {"value read (.item(), bool(), if)": 1}
