"""The two front ends of :func:`~pitchtimbre.data.features.log_spectrogram`, batched in PyTorch.

``log_spectrogram`` calls librosa one chunk of notes at a time; that is fine for the rendered
SoundFont sets but slow for NSynth's 289,205 notes. :class:`TorchFrontEnd` computes the same
log features as a :class:`torch.nn.Module`: every filter is built once, from librosa's own
definitions, and kept as a buffer, so ``.to("cuda")`` moves the whole front end to a GPU.

Mel: ``|STFT|`` (Hann window, ``center=True``, zero padding, as ``librosa.stft`` in 0.10+)
times ``librosa.filters.mel``.

CQT: ``librosa.cqt`` is a *multirate* filterbank, and this module follows it step by step.

1. The top octave of wavelets (``librosa.filters.wavelet``: Hann-windowed complex
   sinusoids, L1-normalised, centred in a power-of-two frame) is applied at the full rate.
   librosa does this in the frequency domain (an STFT with a rectangular window times a
   sparsified FFT of the wavelets); because the STFT is linear, the same numbers come from
   one matrix product of each zero-padded frame with the time-domain kernels that sparsified
   basis stands for, which is what we store.
2. The signal is then decimated by two, the hop halves, and the next octave of filters,
   built for the halved rate, is applied; and so on down to ``fmin``.
3. Each bin is divided by the square root of its filter length (``scale=True``).

librosa decimates with ``soxr_hq``. Away from the start of the signal soxr is a linear,
time-invariant, zero-phase filter, so we measure its impulse response once (by resampling unit
impulses with ``librosa.resample``) and apply it as an FIR filter (FFT convolution). This
reproduces librosa's aliasing and transition band, which an ideal low-pass would not: they
show in the top bins of each octave when a loud partial sits just above that octave's
Nyquist, and in the lowest bins, where the partials of low notes leak. Two more soxr habits
are measured or copied: for decimation by 4 or more its first few output samples differ
(a start-up correction, also measured with impulses), and it returns ``round(n / factor)``
samples, which librosa zero-pads to ``ceil(n / factor)``. When the top filter is far below
Nyquist, librosa first decimates by a larger power of two ("early downsampling"); when the
hop runs out of factors of two, it stops halving the rate. Both are reproduced.

Agreement with librosa 0.11 (float32, CPU; ``tests/test_frontend.py`` has the tolerances):
the mismatch is an absolute error in the magnitude, of a few 1e-6 for the CQT (librosa's
float32 soxr, a 20-bit design, and our float32 arithmetic, in about equal parts, carried
through up to six octaves) and under 1e-6 for the mel (float32 rounding). In the log
features it therefore shrinks as the magnitude grows: on notes peaking at 0.3-0.5, about
1e-3 (CQT) and 4e-5 (mel) where librosa's magnitude exceeds ``10 * log_floor``, 1e-5 and
1e-6 where it exceeds 0.1, and up to 1e-2 and 6e-4 in bins near the ``log_floor`` of 1e-4.

Chapter: 02_data
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FeatureConfig
from ..errors import ConfigError

CQT_SPARSITY = 0.01
"""librosa.cqt's default: each filter drops the smallest FFT coefficients holding 1 % of its L1 mass."""
RESAMPLER = "soxr_hq"
"""librosa.cqt's default resampler, used between octaves."""
TAP_THRESHOLD = 1e-7
"""Decimator taps smaller than this fraction of the largest are dropped (soxr_hq is a 20-bit design)."""


@dataclass(frozen=True)
class _Octave:
    """One octave of the CQT: bins ``lo:hi`` (ascending frequency), computed with frames of
    ``n_fft`` samples every ``hop`` samples at this octave's rate; ``decimate_after`` says
    whether the signal is halved before the next (lower) octave."""

    lo: int
    hi: int
    n_fft: int
    hop: int
    decimate_after: bool


def _two_factors(n: int) -> int:
    """How many times ``n`` divides by two."""
    return (n & -n).bit_length() - 1


def soxr_decimator(factor: int) -> tuple[np.ndarray, np.ndarray]:
    """librosa's ``soxr_hq`` decimation by ``factor`` (``scale=True``), measured: ``(taps, head)``.

    Away from the start of the signal soxr is a linear, time-invariant, zero-phase filter:
    ``y[m] = sum_k taps[k] * x[factor * m + k - K]`` with ``K = (len(taps) - 1) // 2`` and
    zeros outside the signal. The taps are read off the responses to ``factor`` unit
    impulses (one per phase) in the middle of a long buffer, and trimmed where they fall
    below ``TAP_THRESHOLD`` of the largest. For ``factor >= 4`` soxr treats the first few
    input samples (fewer than ``4 * factor``) differently, presumably the start-up of a
    multistage design; ``head`` [E, J] holds that difference, ``y[:J] += x[:E] @ head``,
    measured with impulses at the start (it is empty for ``factor == 2``).

    Chapter: 02_data
    """
    import librosa

    half = 512 * factor  # soxr_hq spans about +-100 output samples: probe well past that
    length = 2 * half
    n_head = 8 * factor
    impulses = np.zeros((factor + n_head, length))
    for phase in range(factor):
        impulses[phase, half + phase] = 1.0
    for p in range(n_head):
        impulses[factor + p, p] = 1.0
    out = librosa.resample(
        impulses, orig_sr=factor, target_sr=1, res_type=RESAMPLER, scale=True, axis=-1
    )
    # The middle impulses: out[phase, m] is the response at offset (half + phase) - factor * m.
    response = np.zeros(2 * length + 1)
    m = np.arange(out.shape[1])
    for phase in range(factor):
        response[length + half + phase - factor * m] = out[phase]
    tiny = TAP_THRESHOLD * np.abs(response).max()
    big = np.nonzero(np.abs(response) > tiny)[0] - length
    reach = int(max(-big.min(), big.max()))
    taps = response[length - reach : length + reach + 1]
    # The start: what soxr does minus what the taps alone predict.
    predicted = _fir_decimate_np(impulses[factor:], taps, factor)
    head = out[factor:] - predicted
    rows = np.nonzero(np.abs(head).max(axis=1) > tiny)[0]
    cols = np.nonzero(np.abs(head).max(axis=0) > tiny)[0]
    if len(rows) == 0:
        return taps, np.zeros((0, 0))
    return taps, head[: rows.max() + 1, : cols.max() + 1]


def _fir_decimate_np(x: np.ndarray, taps: np.ndarray, factor: int) -> np.ndarray:
    """The time-invariant part of :func:`soxr_decimator`, directly in numpy (for measuring)."""
    reach = (len(taps) - 1) // 2
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(reach, reach)])
    n_out = -(-x.shape[-1] // factor)
    frames = np.lib.stride_tricks.sliding_window_view(padded, len(taps), axis=-1)
    return frames[..., : factor * (n_out - 1) + 1 : factor, :] @ taps


def _soxr_decimate(x: Tensor, taps: Tensor, head: Tensor, factor: int) -> Tensor:
    """Decimate ``x`` [B, n] by ``factor`` as ``librosa.resample(..., res_type="soxr_hq")``
    does: [B, ceil(n / factor)]. FFT convolution keeps memory linear in ``n`` on any device."""
    from scipy.fft import next_fast_len

    n = x.shape[-1]
    reach = (taps.shape[-1] - 1) // 2
    size = next_fast_len(n + 2 * reach, real=True)
    # Correlation with the taps = convolution with the taps reversed.
    spectrum = torch.fft.rfft(x, size) * torch.fft.rfft(taps.flip(-1), size)
    full = torch.fft.irfft(spectrum, size)
    n_out = -(-n // factor)
    y = full[..., reach : reach + factor * (n_out - 1) + 1 : factor]
    if head.numel():
        rows, cols = min(head.shape[0], n), min(head.shape[1], n_out)
        start = y[..., :cols] + x[..., :rows] @ head[:rows, :cols]
        y = torch.cat([start, y[..., cols:]], dim=-1)
    # soxr returns round(n / factor) samples (halves up); librosa zero-pads to ceil(n / factor).
    kept = (2 * n + factor) // (2 * factor)
    return F.pad(y[..., :kept], (0, n_out - kept))


def _magnitude(real: Tensor, imag: Tensor) -> Tensor:
    """``|real + i imag|``; faster than ``torch.abs`` of a complex tensor or ``torch.hypot``,
    and safe here (audio magnitudes neither overflow nor underflow float32 when squared)."""
    return (real.square() + imag.square()).sqrt()


def _cqt_kernels(cfg: FeatureConfig) -> tuple[int, list[_Octave], list[np.ndarray]]:
    """librosa.cqt's plan for ``cfg``: the early-downsampling exponent, the octaves, and each
    octave's time-domain kernels [n_fft, 2 * bins] (real parts, then imaginary parts),
    including librosa's sparsification, resampling gain and ``1 / sqrt(length)`` scaling."""
    import librosa

    sr, bpo, n_bins = float(cfg.sample_rate), cfg.bins_per_octave, cfg.n_bins
    fmin = float(librosa.midi_to_hz(cfg.fmin_midi))
    freqs = librosa.interval_frequencies(
        n_bins, fmin=fmin, intervals="equal", bins_per_octave=bpo, sort=True
    )
    # Relative bandwidth of equal-tempered bins (librosa.filters._relative_bandwidth).
    ratio = 2.0 ** (2.0 / bpo)
    alpha = np.full(n_bins, (ratio - 1.0) / (ratio + 1.0))
    n_octaves = math.ceil(n_bins / bpo)
    per_octave = min(bpo, n_bins)

    _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, alpha=alpha)
    nyquist = sr / 2.0
    if cutoff > nyquist:
        raise ConfigError(
            f"FeatureConfig.n_bins: the top CQT filter reaches {cutoff:.0f} Hz, above Nyquist "
            f"({nyquist:.0f} Hz); lower n_bins or fmin_midi"
        )
    # Early downsampling (librosa's __early_downsample_count).
    by_cutoff = max(0, math.ceil(math.log2(nyquist / cutoff)) - 2)
    by_hop = max(0, _two_factors(cfg.hop_length) - n_octaves + 1)
    early = min(by_cutoff, by_hop)
    sr_early = sr / 2**early
    hop = cfg.hop_length // 2**early
    lengths, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr_early, alpha=alpha)

    octaves, kernels = [], []
    my_sr = sr_early
    for i in range(n_octaves):
        hi = n_bins - per_octave * i
        lo = max(0, hi - per_octave)
        basis, basis_lengths = librosa.filters.wavelet(
            freqs=freqs[lo:hi], sr=my_sr, alpha=alpha[lo:hi], window="hann", norm=1, pad_fft=True
        )
        n_fft = basis.shape[1]
        # librosa's __vqt_filter_fft, in its dtypes (complex64).
        basis *= basis_lengths[:, None] / float(n_fft)
        fft_basis = np.fft.fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
        fft_basis = librosa.util.sparsify_rows(
            fft_basis, quantile=CQT_SPARSITY, dtype=np.complex64
        ).toarray()
        gain = np.sqrt(sr_early / my_sr) / np.sqrt(lengths[lo:hi, None])
        # librosa sums fft_basis[k] * STFT[k] over k = 0..n_fft/2, i.e. the frame dotted with
        # sum_k fft_basis[k] * exp(-2j pi k n / n_fft): the forward FFT of the padded basis.
        padded = np.zeros((hi - lo, n_fft), dtype=np.complex128)
        padded[:, : n_fft // 2 + 1] = fft_basis * gain
        kernel = np.fft.fft(padded, axis=1)
        kernels.append(np.concatenate([kernel.real, kernel.imag]).T.astype(np.float32))
        decimate = i < n_octaves - 1 and hop % 2 == 0
        octaves.append(_Octave(lo, hi, n_fft, hop, decimate))
        if decimate:
            hop //= 2
            my_sr /= 2.0
    return early, octaves, kernels


class TorchFrontEnd(nn.Module):
    """The log CQT or log mel of ``cfg`` as a module: ``[..., samples] -> [..., F, frames]``,
    the same numbers as :func:`~pitchtimbre.data.features.log_spectrogram` (all frames,
    librosa's centring), on whatever device and float dtype the module is moved to.

    Filters are computed once here and registered as buffers. ``chunk`` bounds how many
    notes one pass holds in memory; longer inputs are processed ``chunk`` notes at a time.

    Chapter: 02_data
    """

    def __init__(self, cfg: FeatureConfig, chunk: int = 256) -> None:
        super().__init__()
        import librosa

        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.cfg = cfg
        self.chunk = chunk
        self.octaves: list[_Octave] = []
        self.early = 0
        if cfg.kind == "mel":
            window = librosa.filters.get_window("hann", cfg.n_fft, fftbins=True)
            mel = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_bins)
            self.register_buffer("window", torch.as_tensor(window, dtype=torch.float32))
            self.register_buffer("mel_basis", torch.as_tensor(mel, dtype=torch.float32))
        else:
            self.early, self.octaves, kernels = _cqt_kernels(cfg)
            for i, kernel in enumerate(kernels):
                self.register_buffer(f"kernel{i}", torch.from_numpy(kernel))
            for name, factor in (("half", 2), ("early", 2**self.early)):
                if factor > 1:
                    taps, head = soxr_decimator(factor)
                    self.register_buffer(f"{name}_taps", torch.as_tensor(taps, dtype=torch.float32))
                    self.register_buffer(f"{name}_head", torch.as_tensor(head, dtype=torch.float32))

    def _reference(self) -> Tensor:
        """A buffer: its device and dtype are the module's."""
        return self.window if self.cfg.kind == "mel" else self.half_taps

    def forward(self, audio: Tensor) -> Tensor:
        """Log features [..., F, frames] of ``audio`` [..., samples].

        Chapter: 02_data
        """
        ref = self._reference()
        x = torch.as_tensor(audio)
        lead, n = x.shape[:-1], x.shape[-1]
        x = x.reshape(-1, n)
        compute = self._mel if self.cfg.kind == "mel" else self._cqt
        rows = x.shape[0]
        # No notes: one silent note gives the output's shape, then is dropped.
        chunks = [x[i : i + self.chunk] for i in range(0, rows, self.chunk)] or [x.new_zeros(1, n)]
        mag = torch.cat([compute(c.to(device=ref.device, dtype=ref.dtype)) for c in chunks])
        out = torch.log(mag[:rows] + self.cfg.log_floor)
        return out.reshape(*lead, *out.shape[-2:])

    def _mel(self, x: Tensor) -> Tensor:
        """Mel magnitudes [B, n_mels, frames]: mel filters times |STFT|. The STFT is
        librosa's: Hann-windowed frames centred on multiples of the hop, zeros beyond the
        signal (the same numbers as ``torch.stft(..., pad_mode="constant")``, but faster)."""
        n_fft = self.cfg.n_fft
        frames = F.pad(x, (n_fft // 2, n_fft // 2)).unfold(-1, n_fft, self.cfg.hop_length)
        spec = torch.fft.rfft(frames * self.window, dim=-1)  # [B, frames, 1 + n_fft / 2]
        return (_magnitude(spec.real, spec.imag) @ self.mel_basis.T).transpose(1, 2)

    def _cqt(self, x: Tensor) -> Tensor:
        """CQT magnitudes [B, n_bins, frames], octave by octave from the top (see module doc)."""
        if self.early:
            x = _soxr_decimate(x, self.early_taps, self.early_head, 2**self.early)
        mags: list[Tensor] = []
        for i, octave in enumerate(self.octaves):
            kernel = getattr(self, f"kernel{i}")  # [n_fft, 2 * bins]
            half = octave.n_fft // 2
            frames = F.pad(x, (half, half)).unfold(-1, octave.n_fft, octave.hop)
            # One (contiguous) matrix product for all notes and frames: [B * frames, 2 * bins].
            response = frames.reshape(-1, octave.n_fft) @ kernel
            real, imag = response.view(x.shape[0], -1, kernel.shape[1]).chunk(2, dim=-1)
            mags.append(_magnitude(real, imag).transpose(1, 2))
            if octave.decimate_after:
                x = _soxr_decimate(x, self.half_taps, self.half_head, 2)
        # librosa keeps the frames every octave has; octaves were computed top down.
        n_frames = min(m.shape[-1] for m in mags)
        return torch.cat([m[..., :n_frames] for m in reversed(mags)], dim=1)


@functools.lru_cache(maxsize=8)
def _front_end(cfg: FeatureConfig, device: str, chunk: int) -> TorchFrontEnd:
    """Front ends built by :func:`log_spectrogram_torch`, kept for its next call (a chunked
    caller would otherwise rebuild the filters for every chunk)."""
    return TorchFrontEnd(cfg, chunk=chunk).to(device)


def log_spectrogram_torch(
    audio: np.ndarray | Tensor,
    cfg: FeatureConfig,
    device: str | torch.device = "cpu",
    batch: int = 256,
) -> np.ndarray:
    """:func:`~pitchtimbre.data.features.log_spectrogram` computed by :class:`TorchFrontEnd`
    on ``device``, ``batch`` notes at a time: ``audio`` [..., samples] -> float32
    [..., F, frames] numpy. Each batch goes to ``device`` and its features come back, so
    device memory holds one batch whatever the number of notes.

    Chapter: 02_data
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    front = _front_end(cfg, str(torch.device(device)), batch)
    x = torch.as_tensor(audio)
    lead, n = x.shape[:-1], x.shape[-1]
    x = x.reshape(-1, n)
    parts = []
    with torch.inference_mode():
        for start in range(0, max(1, x.shape[0]), batch):
            out = front(x[start : start + batch])
            parts.append(out.to(device="cpu", dtype=torch.float32).numpy())
    features = np.concatenate(parts)
    return features.reshape(*lead, *features.shape[-2:])
