"""SpikingPredictor: the PredRNN-style stack of spiking cells used by the paper's reference implementation.

Per time step t (frames already cut into p x p patches, see :mod:`stcsnn.models.patch`)::

    x_0 = input frame t (real valued: direct encoding)          # or the model's own prediction, see below
    s_1, state_1 = cell_1(x_0, state_1)
    s_l, state_l = cell_l(s_{l-1}, state_l)   for l = 2..L      # layer l reads layer l-1's spikes
    prediction of frame t+1 = readout(s_L)                      # 1x1 conv, no bias, to p*p*C channels

The model runs ``T_in + n_future - 1`` steps and outputs frames 2..T_in+n_future. After the ``T_in`` input
frames the input is the model's own previous prediction (fully autoregressive), unless a scheduled-sampling
mask says to feed the true frame (training only).

Two paths compute the same numbers. The **plain** path (:data:`PLAIN`, ``fast=False``,
:func:`plain_rollout`) is these equations as written: one frame at a time through the neuron modules themselves
(``cell.synapse`` + ``cell.update``). The **fast** path (the default) computes them faster:

* **layer by layer over the observed prefix**: the input frames are known before the run, so each layer's
  synaptic convolution runs once over all prefix frames as one batch, then only the neuron update steps
  through time. From the first predicted frame on it steps frame by frame (each input depends on the
  previous output).
* **fused pathways**: the two STC pathway convolutions are one grouped convolution
  (:class:`stcsnn.neurons.stc.Autapse`).
* **fused neuron updates**: one autograd node per neuron step with a hand-written backward, declared by
  the cell (``cell.fused_update``, :mod:`stcsnn.neurons.fusion`); its forward calls the neuron's own
  equations.
* **channels-last convolutions** (:attr:`ExecutionPolicy.channels_last`): the convolutions batched over the
  prefix frames and, in training, the grouped pathway convolution run on NHWC inputs, where oneDNN is faster;
  the elementwise work stays NCHW (its pathway halves are contiguous there), so each such convolution converts
  its input and output. An STC model's inference on CPU runs **end to end** channels-last instead (except on
  the CPUs of :data:`CPU_INFERENCE_LAYOUT`, where NCHW measured faster): every tensor NHWC from the input
  frames on, no conversion at all, GroupNorm by :func:`stcsnn.neurons.fusion.group_norm` (torch's own is slow
  on NHWC).
* **activation checkpointing over time** (``checkpoint_steps = K > 0``, training only): the rollout runs in
  chunks of K steps under :func:`torch.utils.checkpoint.checkpoint`, keeping only the states between chunks
  (the last chunk, whose backward comes first, is not checkpointed); the backward recomputes one chunk at a
  time, so memory grows with K instead of the sequence length, for about one more forward pass of time.
  Results are the same as without.

Which path and memory layout a run uses is one frozen :class:`ExecutionPolicy`, chosen by the pure function
:func:`choose_policy` from the device and the kind of run unless given, to the model at construction
(``SpikingPredictor(..., policy=...)``) or to one run (``rollout(..., policy=...)``, ``step(..., policy=...)``).

The two paths agree to float rounding, not bit for bit: batching, memory format and fusion change the order
of floating-point operations (and oneDNN picks kernels by CPU and shape), and in a spiking network a rounding
difference can flip a spike. ``tests/test_fast_path.py`` compares them in float64.

Not here (GPU-only, nothing to test them on when this was written): CUDA graphs for inference. bf16 autocast
is the trainer's ``amp: bf16`` (the fast path runs under it; ``stcsnn bench --amp bf16`` measures it). A cell
whose ``update`` is replaced on the instance (the trainer's ``--compile`` wraps ``cell.update`` in
``torch.compile``) runs that ``update`` instead of the fused one (``stcsnn bench`` measures the two).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from stcsnn.device import cpu_model
from stcsnn.errors import StcsnnError, StcsnnTypeError
from stcsnn.models.patch import from_patches, to_patches
from stcsnn.neurons import fusion
from stcsnn.neurons.base import Synapse
from stcsnn.neurons.registry import build_neuron, get_spec

Observer = Callable[[int, int, Tensor, NamedTuple], None]
#: ``channels_last`` layout: every tensor of a run channels-last (NHWC), no conversions (STC inference on CPU)
END_TO_END = "end_to_end"
#: the convolutions that may run channels-last: batched over the prefix frames, the grouped pathway one, the
#: dense one of a single frame
CL_KINDS = ("batched", "grouped", "step")


@dataclass(frozen=True)
class ExecutionPolicy:
    """How a rollout computes, never what (every policy gives the same numbers, to float rounding).

    ``fast``: the fast path (layer-by-layer prefix, fused pathways and updates) or the plain one (the neuron
    modules' own ``synapse`` and ``update``, frame by frame). ``channels_last`` (fast path only): the kinds of
    convolution run on NHWC inputs (a subset of :data:`CL_KINDS`, converting around each), or
    :data:`END_TO_END` (every tensor of the run NHWC, no conversions)."""

    fast: bool = True
    channels_last: tuple[str, ...] | str = ()

    def __post_init__(self) -> None:
        layout = self.channels_last
        if isinstance(layout, list):
            layout = tuple(layout)
            object.__setattr__(self, "channels_last", layout)  # frozen: normalised once, here
        if layout != END_TO_END and not (isinstance(layout, tuple) and set(layout) <= set(CL_KINDS)):
            raise StcsnnError(f"channels_last must be {END_TO_END!r} or a tuple of kinds from {CL_KINDS}, got "
                              f"{layout!r}")
        if layout and not self.fast:
            raise StcsnnError("channels_last is for the fast path: the plain path runs in the default memory format")

    @property
    def end_to_end(self) -> bool:
        return self.channels_last == END_TO_END


#: the plain path: the equations as written
PLAIN = ExecutionPolicy(fast=False)


#: STC inference on a CPU whose model name contains the key: the convolutions to run channels-last instead of
#: :data:`END_TO_END` (the default elsewhere). oneDNN picks kernels by CPU: end to end measured faster than NCHW on
#: an AMD EPYC, slower on an Intel Xeon (``python benchmarks/infer_policy.py``; the README's Performance section).
CPU_INFERENCE_LAYOUT: dict[str, tuple[str, ...]] = {"Intel": ("batched",)}


@functools.cache
def _this_cpu() -> str | None:
    """This machine's CPU model name, read once (every inference run asks it)."""
    return cpu_model()


def choose_policy(device: torch.device | str, *, stc: bool, training: bool, cpu: str | None = None
                  ) -> ExecutionPolicy:
    """The fast path with the memory layout that measured faster (CPU, small configuration, one thread; see
    ``stcsnn bench`` and the README's tables): in training the batched and the grouped convolutions
    channels-last (end to end was slower there: the per-frame dense convolutions run slower on NHWC, and the
    pathway halves alternate every C/16 channels); without gradients, STC models on CPU end to end (the grouped
    convolution without any conversion) unless ``cpu`` (the CPU's model name, :func:`stcsnn.device.cpu_model`)
    is one of :data:`CPU_INFERENCE_LAYOUT`'s, the others batched only. Elsewhere (not measured): the grouped
    convolution only in training, where it pays for its conversions. ``stc``: the model's neurons carry the STC
    circuit; ``training``: gradients are recorded."""
    if training:
        return ExecutionPolicy(True, ("batched", "grouped"))
    if torch.device(device).type != "cpu" or not stc:
        return ExecutionPolicy(True, ("batched",))
    layout = next((kinds for key, kinds in CPU_INFERENCE_LAYOUT.items() if key in (cpu or "")), END_TO_END)
    return ExecutionPolicy(True, layout)


#: The state of :meth:`SpikingPredictor.step`: one cell state per layer, each the cell's own NamedTuple
#: (``MembraneState(v, s)``, ``LSTMState(s, c)``, ...) of (B, hidden_channels[l], H / p, W / p) tensors.
StepState = tuple[NamedTuple, ...]


class Rollout(NamedTuple):
    """``frames``: (B, steps, C, H, W), output t predicts frame t+1; ``rates``: (L,) mean firing rate per layer."""

    frames: Tensor
    rates: Tensor


class SpikingPredictor(nn.Module):
    def __init__(
        self,
        neuron: str,
        frame_channels: int,
        hidden_channels: list[int] | tuple[int, ...] = (64, 64, 64),
        kernel_size: int = 5,
        patch_size: int = 4,
        gradient_detach: bool = False,
        neuron_options: dict | None = None,
        checkpoint_steps: int = 0,
        policy: ExecutionPolicy | None = None,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.neuron = neuron
        self.frame_channels = frame_channels
        self.patch_size = patch_size
        self.hidden_channels = list(hidden_channels)
        options = dict(neuron_options or {})
        if get_spec(neuron).is_stc:
            options.setdefault("gradient_detach", gradient_detach)
        patch_channels = patch_size * patch_size * frame_channels
        widths = [patch_channels, *self.hidden_channels]
        self.cells = nn.ModuleList(
            build_neuron(neuron, widths[i], widths[i + 1], kernel_size, **options) for i in range(len(widths) - 1)
        )
        self.readout = nn.Conv2d(self.hidden_channels[-1], patch_channels, 1, bias=False)
        #: every GroupNorm's epsilon (``Config.norm_eps``: why it matters there); the fast paths read ``norm.eps``
        self.norm_eps = float(norm_eps)
        if not self.norm_eps > 0:
            raise StcsnnError(f"norm_eps must be > 0, got {norm_eps}")
        for module in self.cells.modules():
            if isinstance(module, nn.GroupNorm):
                module.eps = self.norm_eps
        if policy is not None and not isinstance(policy, ExecutionPolicy):
            raise StcsnnTypeError(f"policy must be an ExecutionPolicy or None, got {type(policy).__name__}")
        #: the policy of every run; ``None``: :func:`choose_policy` for each run's device and kind
        self._policy = policy
        self.is_stc = get_spec(neuron).is_stc
        #: > 0: activation checkpointing over chunks of this many time steps (when gradients are recorded)
        self.checkpoint_steps = int(checkpoint_steps)
        if self.checkpoint_steps < 0:
            raise StcsnnError(f"checkpoint_steps must be >= 0, got {checkpoint_steps}")

    @property
    def fast(self) -> bool:
        """Whether runs take the fast path by default; read-only (assigning it raises): the execution choices are
        the frozen :attr:`policy`, given at construction, or per run."""
        return self._policy is None or self._policy.fast

    @property
    def policy(self) -> ExecutionPolicy | None:
        """The :class:`ExecutionPolicy` given at construction (``None``: chosen per run); read-only."""
        return self._policy

    def run_policy(self, x: Tensor, fast: bool | None = None, policy: ExecutionPolicy | None = None
                   ) -> ExecutionPolicy:
        """The policy of one run on ``x``: ``policy`` if given; else ``fast=False`` is :data:`PLAIN`; else the
        model's own; else :func:`choose_policy` for ``x``'s device and whether gradients are recorded."""
        if policy is not None:
            if fast is not None and fast != policy.fast:
                raise StcsnnError(f"fast={fast} contradicts policy {policy}: give one of them")
            return policy
        if fast is False:
            return PLAIN
        if self._policy is not None and (fast is None or self._policy.fast):
            return self._policy
        training = torch.is_grad_enabled()
        cpu = _this_cpu() if (x.device.type == "cpu" and not training) else None
        return choose_policy(x.device, stc=self.is_stc, training=training, cpu=cpu)

    def compile_updates(self) -> None:
        """``torch.compile`` each cell's ``update`` (the trainer's ``compile: true``). The compiled update replaces
        the fused one (a cell whose update is replaced on the instance runs that update)."""
        for cell in self.cells:
            cell.update = torch.compile(cell.update)

    # ------------------------------------------------------------------ checks
    def check_frames(self, frames: Tensor, what: str = "frames") -> None:
        if not isinstance(frames, Tensor):
            raise StcsnnTypeError(f"{what} must be a torch.Tensor, got {type(frames).__name__}")
        if not frames.is_floating_point():
            raise StcsnnTypeError(f"{what} must be floating point in [0, 1], got dtype {frames.dtype}")
        if frames.dim() != 5:
            raise StcsnnError(f"{what} must have shape (B, T, C, H, W), got {tuple(frames.shape)}")
        _, _, c, h, w = frames.shape
        if c != self.frame_channels:
            raise StcsnnError(f"{what} must have {self.frame_channels} channels, got {c} (shape {tuple(frames.shape)})")
        if h % self.patch_size or w % self.patch_size:
            raise StcsnnError(f"patch size {self.patch_size} must divide the frame size, got {h}x{w}")

    def as_param_dtype(self, x: Tensor) -> Tensor:
        """``x`` in the parameters' dtype (float32 data into a ``dtype: float64`` model); autocast, which keeps
        float32 parameters, is not affected."""
        dtype = self.readout.weight.dtype
        return x if x.dtype == dtype else x.to(dtype)

    # ------------------------------------------------------------------ running
    def forward(self, inputs: Tensor, n_future: int, policy: ExecutionPolicy | None = None) -> Tensor:
        """Predict ``n_future`` frames after ``inputs`` (B, T_in, C, H, W), fully autoregressively (``policy``: as
        for :meth:`rollout`)."""
        return self.rollout(inputs, inputs.shape[1], n_future, policy=policy).frames[:, -n_future:]

    def rollout(
        self,
        frames: Tensor,
        input_frames: int,
        n_future: int,
        mask: Tensor | None = None,
        reverse: bool = False,
        observer: Observer | None = None,
        fast: bool | None = None,
        policy: ExecutionPolicy | None = None,
    ) -> Rollout:
        """Run ``input_frames + n_future - 1`` steps.

        ``frames`` (B, T, C, H, W) holds at least the ``input_frames`` observed frames; frames after them are
        read only where ``mask`` (scheduled sampling, training) selects the true frame: ``mask[b, j] = 1`` feeds
        the true frame. Scheduled: ``mask`` is (B, n_future - 1) for the inputs of steps ``input_frames ..``;
        reverse (PredRNN-v2): (B, input_frames + n_future - 2) for the inputs of steps ``1 ..``.
        Without a mask the model never reads a frame after ``input_frames``.
        ``observer(t, layer, spikes, state)``, if given, is called after every neuron update (for analysis:
        e.g. ``state.v.retain_grad()`` to read gradients through time); it turns activation checkpointing off.
        ``policy``: the :class:`ExecutionPolicy` of this run; ``fast=False`` is :data:`PLAIN`; neither: the
        model's policy, else :func:`choose_policy`'s (:meth:`run_policy`).
        """
        frames, mask = self._check_rollout(frames, input_frames, n_future, mask, reverse)
        steps = input_frames + n_future - 1
        p = self.patch_size
        run = _Run(self, to_patches(frames, p), input_frames, mask, reverse, observer,
                   self.run_policy(frames, fast, policy))
        # steps [0, prefix) are teacher-forced from the start: evaluated layer by layer
        prefix = (1 if (reverse and mask is not None) else input_frames) if run.fast else 0
        k = self.checkpoint_steps
        use_ckpt = k > 0 and observer is None and torch.is_grad_enabled()
        states: list = [None] * len(self.cells)
        rate_sums = torch.zeros(len(self.cells), device=frames.device)
        outputs: list[Tensor] = []
        prev: Tensor | None = None
        t = 0
        while t < steps:
            end = prefix if t < prefix else steps
            if use_ckpt:
                end = min(end, t + k)
            fn = run.prefix if t < prefix else run.sequential
            if use_ckpt and end < steps:  # the last chunk's backward comes first: no point recomputing it
                out, prev, states, rates = checkpoint(fn, t, end, prev, states, use_reentrant=False)
            else:
                out, prev, states, rates = fn(t, end, prev, states)
            outputs.append(out)
            rate_sums = rate_sums + rates
            t = end
        out = torch.cat(outputs, 1) if len(outputs) > 1 else outputs[0]
        return Rollout(from_patches(out, p), rate_sums / steps)

    def _check_rollout(self, frames: Tensor, input_frames: int, n_future: int, mask: Tensor | None,
                       reverse: bool) -> tuple[Tensor, Tensor | None]:
        """Validated ``(frames, mask)`` of a rollout: without a mask only the observed frames are kept (no ground
        truth after the inputs can leak in); a mask is shaped (B, n, 1, 1, 1) in the frames' dtype."""
        self.check_frames(frames)
        frames = self.as_param_dtype(frames)
        if n_future < 1 or input_frames < 1:
            raise StcsnnError(f"need input_frames >= 1 and n_future >= 1, got {input_frames} and {n_future}")
        if frames.shape[1] < input_frames:
            raise StcsnnError(f"expected at least {input_frames} input frames, got {frames.shape[1]}")
        steps = input_frames + n_future - 1
        if mask is None:
            return frames[:, :input_frames], None
        want = steps - 1 if reverse else n_future - 1
        if tuple(mask.shape[:2]) != (frames.shape[0], want) or frames.shape[1] < steps:
            raise StcsnnError(f"scheduled-sampling mask must be (B, {want}) with {steps} frames, "
                              f"got mask {tuple(mask.shape)} and {frames.shape[1]} frames")
        return frames, mask.to(frames.dtype).view(*mask.shape[:2], 1, 1, 1)

    # ------------------------------------------------------------------ streaming
    def step(self, frame: Tensor, state: StepState | None = None, fast: bool | None = None,
             policy: ExecutionPolicy | None = None) -> tuple[Tensor, StepState]:
        """One time step: ``pred, state = model.step(frame, state)``.

        ``frame`` (B, C, H, W) is the frame at time t (an observed one, or the model's own previous forecast);
        ``pred`` (B, C, H, W) is the forecast of frame t+1. ``state`` is a :data:`StepState`: a tuple with one
        cell state per layer, each that cell's own NamedTuple (e.g. ``MembraneState(v, s)``, ``LSTMState(s, c)``)
        of tensors shaped (B, hidden_channels[l], H / patch_size, W / patch_size); ``None`` starts from fresh
        (zero) states. Nothing else is carried between calls, so feeding the ``T_in`` input frames and then each
        forecast in turn computes what ``model(inputs, n_future)`` does (that is the plain path's sequential
        step; the fast path batches the observed prefix instead, equal to float rounding).
        ``policy`` / ``fast`` as for :meth:`rollout`: ``fast=False`` (:data:`PLAIN`) runs the neuron modules'
        own ``update`` (what ONNX export traces).
        """
        if not isinstance(frame, Tensor):
            raise StcsnnTypeError(f"frame must be a torch.Tensor, got {type(frame).__name__}")
        if frame.dim() != 4:
            raise StcsnnError(f"frame must have shape (B, C, H, W), got {tuple(frame.shape)}")
        self.check_frames(frame.unsqueeze(1), "frame")
        frame = self.as_param_dtype(frame)
        b, _, h, w = frame.shape
        p = self.patch_size
        if state is not None:
            state = self.check_step_state(state, b, h // p, w // p)
        return self._step(frame, state, self.run_policy(frame, fast, policy))

    def check_step_state(self, state, batch: int, height: int, width: int) -> StepState:
        """``state`` as a :data:`StepState` (plain tuples of the right length become the cells' NamedTuples),
        or a clear error for a state of another model, batch or frame size."""
        if not isinstance(state, (tuple, list)) or len(state) != len(self.cells):
            found = f"{type(state).__name__} of length {len(state)}" if isinstance(state, (tuple, list)) \
                else type(state).__name__
            raise StcsnnError(f"state must be a tuple of {len(self.cells)} per-layer cell states (what step() "
                              f"returned), got a {found}")
        out = []
        for l, (cell, s) in enumerate(zip(self.cells, state)):
            cls = cell.State
            if not isinstance(s, cls) and isinstance(s, (tuple, list)) and len(s) == len(cls._fields):
                s = cls(*s)
            if not isinstance(s, cls):
                raise StcsnnTypeError(f"state of layer {l} must be a {cls.__name__} {cls._fields}, "
                                      f"got {type(s).__name__}")
            expected = (batch, cell.hidden_channels, height, width)
            for name, t in zip(s._fields, s):
                if not isinstance(t, Tensor) or tuple(t.shape) != expected:
                    found = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                    raise StcsnnError(f"state of layer {l}, field {name!r}: expected shape {expected}, got {found} "
                                      "(a state from another batch or frame size?)")
            out.append(s)
        return tuple(out)

    def _step(self, frame: Tensor, state: StepState | None, policy: ExecutionPolicy) -> tuple[Tensor, StepState]:
        """:meth:`step` without the checks (what ONNX export traces, with :data:`PLAIN`); the same operations as
        one step of :meth:`_Run.sequential`."""
        p = self.patch_size
        run = _Run(self, to_patches(frame.unsqueeze(1), p), 1, None, False, None, policy)
        states = list(state) if state is not None else [None] * len(self.cells)
        net = run.x[:, 0]
        for l, cell in enumerate(self.cells):
            current = run.synapse(cell, net) if run.fast else cell.synapse(net)
            net, states[l] = run.update(cell, current, states[l])
        pred = run.conv(self.readout, net)
        return from_patches(pred.unsqueeze(1), p)[:, 0], tuple(states)


class _Run:
    """One rollout's inputs; ``prefix`` / ``sequential`` evaluate steps ``[t0, t1)`` from the given states and
    return ``(outputs (B, t1 - t0, C, H, W), last output (B, C, H, W), states, spike-rate sums (L,))``."""

    def __init__(self, model: SpikingPredictor, x: Tensor, input_frames: int, mask: Tensor | None, reverse: bool,
                 observer: Observer | None, policy: ExecutionPolicy) -> None:
        self.model = model
        self.x = x
        self.input_frames = input_frames
        self.mask = mask
        self.reverse = reverse
        self.observer = observer
        self.fast = policy.fast
        #: every tensor of the run channels-last, from the input frames on: no layout conversions at all
        self.end_to_end = policy.end_to_end
        if self.end_to_end:
            self.x = x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
        self.cl_kinds = () if self.end_to_end else policy.channels_last
        #: the pathway GroupNorm: end to end, the channels-last one (see :func:`stcsnn.neurons.fusion.group_norm`)
        self.pathway_norm = fusion.group_norm if self.end_to_end else None

    # ------------------------------------------------------------------ pieces
    def conv(self, conv: nn.Module, x: Tensor, kind: str = "step") -> Tensor:
        """``conv(x)``, on channels-last input where that is faster (``kind``: "batched" -- over many frames,
        "grouped" -- the pathway convolution, "step" -- a dense convolution of one frame); the result and the
        gradient of ``x`` in the default layout. (Always through the module: its hooks -- the energy counter's
        -- see every call.)"""
        if kind not in self.cl_kinds:
            return conv(x)
        return conv(_ToChannelsLast.apply(x)).contiguous()

    def synapse(self, cell: nn.Module, x: Tensor, kind: str = "step") -> Tensor:
        syn = cell.synapse
        if self.end_to_end and not fusion.is_channels_last(x):  # (an input frame mixed with a prediction)
            x = x.contiguous(memory_format=torch.channels_last)
        if type(syn) is Synapse:
            y = self.conv(syn.conv, x, kind)
            return fusion.group_norm(syn.norm, y) if self.end_to_end else syn.norm(y)
        if type(syn) is nn.Conv2d:
            return self.conv(syn, x, kind)
        return syn(x)

    def update(self, cell: nn.Module, current: Tensor, state):
        return cell.neuron_step(current, state, self.fast, self.grouped_conv, self.pathway_norm)

    def grouped_conv(self, conv: nn.Module, x: Tensor) -> Tensor:
        return self.conv(conv, x, "grouped")

    def time_batched(self, fn: Callable[[Tensor], Tensor], seq: Tensor) -> Tensor:
        """Apply a per-frame function to (B, T, C, H, W) as one batch of B*T frames."""
        b, t = seq.shape[:2]
        if self.end_to_end:  # merged in the (B, T, H, W, C) layout: a view, never a transposing copy
            c, h, w = seq.shape[2:]
            out = fn(seq.permute(0, 1, 3, 4, 2).reshape(b * t, h, w, c).permute(0, 3, 1, 2))
        else:
            out = fn(seq.reshape(b * t, *seq.shape[2:]))
        return out.reshape(b, t, *out.shape[1:])

    def unbind_time(self, seq: Tensor) -> list[Tensor]:
        """(B, T, C, H, W) -> T frames (B, C, H, W). Not ``seq[:, i]``: the backward of T selects would zero-fill
        T full-size buffers; end to end, unbound in the (B, T, H, W, C) layout (the backward stacks the frames'
        gradients there: no transposing copy)."""
        if not self.end_to_end:
            return list(seq.unbind(1))
        return [f.permute(0, 3, 1, 2) for f in seq.permute(0, 1, 3, 4, 2).unbind(1)]

    def stack_time(self, frames: list[Tensor]) -> Tensor:
        """T frames (B, C, H, W) -> (B, T, C, H, W); end to end in the (B, T, H, W, C) layout (no transposing
        copy of channels-last frames)."""
        if not self.end_to_end:
            return torch.stack(frames, 1)
        return torch.stack([f.permute(0, 2, 3, 1) for f in frames], 1).permute(0, 1, 4, 2, 3)

    def input(self, t: int, prev: Tensor | None) -> Tensor:
        mask, x = self.mask, self.x
        if t < self.input_frames and not (self.reverse and mask is not None and t > 0):
            return x[:, t]
        if mask is None:
            return prev
        m = mask[:, t - 1] if self.reverse else mask[:, t - self.input_frames]
        return m * x[:, t] + (1 - m) * prev

    # ------------------------------------------------------------------ chunks
    def prefix(self, t0: int, t1: int, prev, states: list):
        """Teacher-forced steps, layer by layer: each synaptic convolution over all frames of the chunk at once."""
        model, observer = self.model, self.observer
        states = list(states)
        rates = torch.zeros(len(model.cells), device=self.x.device)
        spikes = self.x[:, t0:t1]
        for l, cell in enumerate(model.cells):
            currents = self.time_batched(lambda z, cell=cell: self.synapse(cell, z, "batched"), spikes)
            seq = []
            for i, current in enumerate(self.unbind_time(currents)):
                s, states[l] = self.update(cell, current, states[l])
                if observer is not None:
                    observer(t0 + i, l, s, states[l])
                seq.append(s)
            spikes = self.stack_time(seq)
            rates[l] = spikes.detach().mean(dim=(0, 2, 3, 4)).sum()
        out = self.time_batched(lambda z: self.conv(model.readout, z, "batched"), spikes)
        return out, out[:, -1], states, rates

    def sequential(self, t0: int, t1: int, prev, states: list):
        """Steps whose input may depend on the previous output: one frame at a time through all layers."""
        model, observer = self.model, self.observer
        states = list(states)
        rates = torch.zeros(len(model.cells), device=self.x.device)
        outputs = []
        for t in range(t0, t1):
            net = self.input(t, prev)
            for l, cell in enumerate(model.cells):
                current = self.synapse(cell, net) if self.fast else cell.synapse(net)
                net, states[l] = self.update(cell, current, states[l])
                if observer is not None:
                    observer(t, l, net, states[l])
                rates[l] += net.detach().mean()
            prev = self.conv(model.readout, net)
            outputs.append(prev)
        return self.stack_time(outputs), prev, states, rates


def plain_rollout(model: SpikingPredictor, frames: Tensor, input_frames: int, n_future: int,
                  mask: Tensor | None = None, reverse: bool = False) -> Rollout:
    """:meth:`SpikingPredictor.rollout` on the plain path: every frame through the neuron modules' own
    ``synapse`` and ``update``, no batching over time, no fusion, default memory format."""
    return model.rollout(frames, input_frames, n_future, mask, reverse, policy=PLAIN)


class _ToChannelsLast(torch.autograd.Function):
    """``x`` in channels-last memory format; the gradient comes back in the default (contiguous) format, so the
    elementwise neuron updates never mix layouts."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.contiguous()
