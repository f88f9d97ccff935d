"""Log-mel features, computed inside the nets from 16 kHz waveforms: a checkpoint then transcribes audio files
with nothing but itself (no feature settings to keep in step with the data side), the features are computed on
the accelerator with the rest of the net, and SpecAugment follows the net's own train/eval mode."""

from __future__ import annotations

import math
from typing import Annotated

import torch
from torch import nn

from dlforge.constraints import NonNegative, Positive

SAMPLE_RATE = 16000


def hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)  # HTK's mel scale, torchaudio's default


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None):
    """(n_freqs, n_mels) triangular filters, equally spaced on the mel scale, unnormalised: the math of
    torchaudio.functional.melscale_fbanks(mel_scale="htk", norm=None)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    frequencies = torch.linspace(0, sample_rate // 2, n_freqs)
    mels = torch.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2)
    corners = 700.0 * (10 ** (mels / 2595.0) - 1.0)  # each filter's left, centre and right frequency
    widths = corners[1:] - corners[:-1]
    slopes = corners[None, :] - frequencies[:, None]  # (n_freqs, n_mels + 2)
    rising, falling = -slopes[:, :-2] / widths[:-1], slopes[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class LogMel(nn.Module):
    """(batch, samples) waveforms -> (batch, n_mels, frames) log-mel energies, normalised per mel band by a
    BatchNorm (its running statistics at eval time: a clip's features do not depend on its batch), and in
    training masked SpecAugment-style (Park et al. 2019): `freq_masks` bands of up to `freq_mask_width` mels
    and `time_masks` spans of up to `time_mask_width` frames per example, set to the band's mean (0).
    Frames are `window_ms` long, every `hop_ms`; a clip of n samples gives n // hop + 1 frames."""

    def __init__(
        self,
        n_mels: Annotated[int, Positive] = 40,
        window_ms: Annotated[float, Positive] = 25.0,
        hop_ms: Annotated[float, Positive] = 10.0,
        freq_masks: Annotated[int, NonNegative] = 2,
        freq_mask_width: Annotated[int, NonNegative] = 8,
        time_masks: Annotated[int, NonNegative] = 2,
        time_mask_width: Annotated[int, NonNegative] = 10,
    ):
        super().__init__()
        self.n_fft = round(window_ms * SAMPLE_RATE / 1000)
        self.hop = round(hop_ms * SAMPLE_RATE / 1000)
        self.n_mels = n_mels
        self.masks = ((freq_masks, freq_mask_width, 1), (time_masks, time_mask_width, 2))
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(self.n_fft // 2 + 1, n_mels, SAMPLE_RATE), persistent=False)
        self.norm = nn.BatchNorm1d(n_mels)

    def frames(self, samples: torch.Tensor) -> torch.Tensor:
        return samples // self.hop + 1

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        spectrum = torch.stft(waves.float(), self.n_fft, self.hop, window=self.window, return_complex=True)
        energies = self.filterbank.T @ spectrum.abs().square()  # (batch, n_mels, frames)
        features = self.norm(torch.log(energies + 1e-6))
        if self.training:
            for count, max_width, dim in self.masks:
                for _ in range(count):
                    features = features.masked_fill(_random_span(features, max_width, dim), 0.0)
        return features


def _random_span(features: torch.Tensor, max_width: int, dim: int) -> torch.Tensor:
    """A mask over `features` (batch, mels, frames) covering, per example, a random span of up to `max_width`
    positions along `dim`."""
    batch, size = features.shape[0], features.shape[dim]
    width = torch.randint(0, max_width + 1, (batch, 1), device=features.device)
    start = (torch.rand(batch, 1, device=features.device) * (size - width).clamp(min=1)).long()
    positions = torch.arange(size, device=features.device)
    span = (positions >= start) & (positions < start + width)  # (batch, size)
    return span[:, :, None] if dim == 1 else span[:, None, :]
