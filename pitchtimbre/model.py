"""The generative model: two inference networks (pitch, timbre) and one decoder.

A spectrogram X = (x_1..x_T) is generated frame by frame from two latent sequences,
p(x_t | z^p_t, z^t_t) = N(x_t; f(z^p_t, z^t_t), sigma^2 I), with the prior N(0, I) on every
z^p_t and z^t_t. The two encoders q(z^p | X) and q(z^t | X) are independent networks that
both see the whole spectrogram. All three networks are 1-D convolutions over time with
frequency as channels, so each frame's latent also sees a few neighbouring frames.

Chapter: 03_generative_model
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .config import ModelConfig


def conv_stack(
    in_ch: int,
    hidden: int,
    out_ch: int,
    layers: int,
    kernel: int,
    head_kernel: int = 1,
    *,
    slope: float,
) -> nn.Sequential:
    """``layers`` 1-D convolutions (same length in and out), LeakyReLU of ``slope`` between
    them; the last one has kernel ``head_kernel``.

    Chapter: 03_generative_model
    """
    chans = [in_ch] + [hidden] * (layers - 1) + [out_ch]
    mods: list[nn.Module] = []
    for i in range(layers):
        k = head_kernel if i == layers - 1 else kernel
        mods.append(nn.Conv1d(chans[i], chans[i + 1], k, padding=k // 2))
        if i < layers - 1:
            mods.append(nn.LeakyReLU(slope))
    return nn.Sequential(*mods)


class FrameEncoder(nn.Module):
    """q(z | X): spectrogram [B, F, T] -> per-frame mean and log-variance [B, T, D].

    Chapter: 03_generative_model
    """

    def __init__(self, n_bins: int, latent: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.latent = latent
        self.logvar_range = cfg.logvar_range
        self.net = conv_stack(
            n_bins,
            cfg.hidden,
            2 * latent,
            cfg.layers,
            cfg.kernel_size,
            cfg.head_kernel_size,
            slope=cfg.leaky_slope,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(x).transpose(1, 2)  # [B, T, 2D]
        mean, logvar = h.split(self.latent, dim=-1)
        return mean, logvar.clamp(*self.logvar_range)


class FrameDecoder(nn.Module):
    """The mean of p(x_t | z^p_t, z^t_t): latents [B, T, Dp], [B, T, Dt] -> [B, F, T].

    Chapter: 03_generative_model
    """

    def __init__(self, n_bins: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.net = conv_stack(
            cfg.latent_pitch + cfg.latent_timbre,
            cfg.hidden,
            n_bins,
            cfg.layers,
            cfg.kernel_size,
            cfg.head_kernel_size,
            slope=cfg.leaky_slope,
        )

    def forward(self, z_pitch: torch.Tensor, z_timbre: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z_pitch, z_timbre], dim=-1).transpose(1, 2))


@dataclass
class Posterior:
    """Per-frame Gaussian posteriors of both latents, each [B, T, D].

    Chapter: 03_generative_model
    """

    pitch_mean: torch.Tensor
    pitch_logvar: torch.Tensor
    timbre_mean: torch.Tensor
    timbre_logvar: torch.Tensor


@dataclass
class VAEOutput:
    """Everything one forward pass produces.

    Chapter: 03_generative_model
    """

    posterior: Posterior
    z_pitch: torch.Tensor
    z_timbre: torch.Tensor
    reconstruction: torch.Tensor


def reparameterise(
    mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I), drawn from ``generator``.

    Chapter: 03_generative_model
    """
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


class PitchTimbreVAE(nn.Module):
    """The two-latent VAE of the poster. The same network serves the vanilla baseline
    (trained without the contrastive terms) and the proposed model.

    Chapter: 03_generative_model
    """

    def __init__(self, n_bins: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_bins = n_bins
        self.cfg = cfg
        self.pitch_encoder = FrameEncoder(n_bins, cfg.latent_pitch, cfg)
        self.timbre_encoder = FrameEncoder(n_bins, cfg.latent_timbre, cfg)
        self.decoder = FrameDecoder(n_bins, cfg)
        if cfg.sigma is None:
            self.log_sigma = nn.Parameter(torch.zeros(()))
        else:
            self.register_buffer("log_sigma", torch.tensor(math.log(cfg.sigma)))

    @property
    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def encode(self, x: torch.Tensor) -> Posterior:
        """Both posteriors of spectrograms ``x`` [B, F, T].

        Chapter: 03_generative_model
        """
        pm, pv = self.pitch_encoder(x)
        tm, tv = self.timbre_encoder(x)
        return Posterior(pm, pv, tm, tv)

    def decode(self, z_pitch: torch.Tensor, z_timbre: torch.Tensor) -> torch.Tensor:
        """The reconstruction mean [B, F, T] from latents [B, T, D].

        Chapter: 03_generative_model
        """
        return self.decoder(z_pitch, z_timbre)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> VAEOutput:
        post = self.encode(x)
        if self.training:
            zp = reparameterise(post.pitch_mean, post.pitch_logvar, generator)
            zt = reparameterise(post.timbre_mean, post.timbre_logvar, generator)
        else:
            zp, zt = post.pitch_mean, post.timbre_mean
        return VAEOutput(post, zp, zt, self.decode(zp, zt))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of ``model``.

    Chapter: 03_generative_model
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
