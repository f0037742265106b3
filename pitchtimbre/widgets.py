"""The latent explorer: pick notes, see them in both spaces, swap their latents, listen.

Swapping is the disentanglement test you can hear: decode the pitch latents of note A with
the timbre latents of note B, and a well disentangled model plays A's pitch on B's
instrument. :class:`LatentExplorer` does the work (and is what the tests call);
:meth:`LatentExplorer.widget` wraps it in ipywidgets for a live notebook, and
:meth:`LatentExplorer.static_swaps` renders fixed examples (figures and audio players) for
the published book, where no kernel runs the widgets.

Chapter: 08_latent_explorer
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure

from .audio import features_to_audio
from .config import FeatureConfig
from .data.dataset import NoteDataset
from .errors import ConfigError, DataError
from .metrics import encode_means
from .model import PitchTimbreVAE
from .viz import draw_features

SWAP_TITLES = ("pitch of A, timbre of B", "pitch of B, timbre of A")
"""Titles of a :class:`Swap`'s two decoded swaps, in the order of its fields."""


@dataclass
class Swap:
    """Spectrograms (normalised log features [F, T]) of two notes, their reconstructions and
    the two swaps.

    Chapter: 08_latent_explorer
    """

    a: int
    b: int
    originals: tuple[torch.Tensor, torch.Tensor]
    reconstructions: tuple[torch.Tensor, torch.Tensor]
    pitch_a_timbre_b: torch.Tensor
    pitch_b_timbre_a: torch.Tensor


class LatentExplorer:
    """Held-out notes, a trained model, and everything needed to swap and listen.

    Chapter: 08_latent_explorer
    """

    def __init__(
        self, notes: NoteDataset, models: dict[str, PitchTimbreVAE], features: FeatureConfig
    ) -> None:
        self.notes = notes
        self.models = models
        self.features = features
        self._latents = {name: encode_means(m, notes.features) for name, m in models.items()}

    def label(self, i: int) -> str:
        """'instrument, MIDI pitch, velocity' of note ``i`` (the instrument by its preset's
        name where known, :meth:`~pitchtimbre.data.NoteDataset.instrument_label`)."""
        inst = self.notes.instrument_label(int(self.notes.instrument[i]))
        return f"{inst}, MIDI {int(self.notes.pitch[i])}, velocity {int(self.notes.velocity[i])}"

    def pick(self, family: str, pitch: int) -> int:
        """The loudest held-out note of ``family`` whose pitch is closest to ``pitch``.

        Chapter: 08_latent_explorer
        """
        candidates = [
            (abs(r.pitch - pitch), -r.velocity, r.note_str, i)
            for i, r in enumerate(self.notes.records)
            if r.instrument_family_str == family
        ]
        if not candidates:
            families = sorted({r.instrument_family_str for r in self.notes.records})
            raise KeyError(f"no held-out note of family {family!r}; families are {families}")
        return min(candidates)[-1]

    @torch.no_grad()
    def swap(self, a: int, b: int, model: str = "proposed") -> Swap:
        """Decode (pitch of a, timbre of b) and (pitch of b, timbre of a).

        Chapter: 08_latent_explorer
        """
        net = self.models[model]
        zp, zt = self._latents[model]
        device = next(net.parameters()).device

        def dec(p: int, t: int) -> torch.Tensor:
            return net.decode(zp[p : p + 1].to(device), zt[t : t + 1].to(device))[0].cpu()

        return Swap(
            a=a,
            b=b,
            originals=(self.notes.features[a], self.notes.features[b]),
            reconstructions=(dec(a, a), dec(b, b)),
            pitch_a_timbre_b=dec(a, b),
            pitch_b_timbre_a=dec(b, a),
        )

    def audio(self, spec: torch.Tensor, seed: int = 0) -> np.ndarray:
        """A waveform for a spectrogram of this data set [F, T], or one per spectrogram of a
        stack [N, F, T] (Griffin-Lim, faster on a stack; see :mod:`pitchtimbre.audio`);
        ``seed`` picks Griffin-Lim's random starting phase.

        Chapter: 08_latent_explorer
        """
        return features_to_audio(spec, self.notes.mean, self.notes.std, self.features, seed=seed)

    def swap_figure(self, s: Swap) -> Figure:
        """Originals, reconstructions and swaps of two notes in one figure.

        Chapter: 08_latent_explorer
        """
        import matplotlib.pyplot as plt

        panels = [
            (s.originals[0], f"A: {self.label(s.a)}"),
            (s.originals[1], f"B: {self.label(s.b)}"),
            (s.reconstructions[0], "A reconstructed"),
            (s.reconstructions[1], "B reconstructed"),
            (s.pitch_a_timbre_b, SWAP_TITLES[0]),
            (s.pitch_b_timbre_a, SWAP_TITLES[1]),
        ]
        fig, axes = plt.subplots(
            3, 2, figsize=(8.6, 7), sharex=True, sharey=True, layout="constrained"
        )
        freq_label = draw_features(
            fig, axes.flat, [spec.numpy() for spec, _ in panels], self.features
        )
        for ax, (_, title) in zip(axes.flat, panels, strict=True):
            ax.set_title(title, fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel(freq_label)
        for ax in axes[-1]:
            ax.set_xlabel("frame")
        return fig

    def static_swaps(self, pairs: Sequence[tuple[int, int]], model: str = "proposed") -> None:
        """Display fixed swaps with audio players: the explorer's fallback for a static page.

        Chapter: 08_latent_explorer
        """
        import matplotlib.pyplot as plt
        from IPython.display import Audio, Markdown, display

        sr = self.features.sample_rate
        titles = (
            "A (original features, inverted)",
            "B (original features, inverted)",
            *SWAP_TITLES,
        )
        swaps = [self.swap(a, b, model) for a, b in pairs]
        clips = self.audio(  # every clip of every pair in one Griffin-Lim call
            torch.stack(
                [
                    spec
                    for s in swaps
                    for spec in (*s.originals, s.pitch_a_timbre_b, s.pitch_b_timbre_a)
                ]
            )
        ).reshape(len(swaps), len(titles), -1)
        for s, waves in zip(swaps, clips, strict=True):
            display(
                Markdown(f"**A** = {self.label(s.a)} · **B** = {self.label(s.b)} · model: {model}")
            )
            fig = self.swap_figure(s)
            display(fig)
            plt.close(fig)  # else the inline backend shows it again at the cell's end
            for title, wave in zip(titles, waves, strict=True):
                display(Markdown(title))
                display(Audio(wave, rate=sr))

    def widget(self):
        """An ipywidgets panel: two note pickers, a model toggle, the swap figure and audio.

        Chapter: 08_latent_explorer
        """
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import Audio, Image

        options = [(self.label(i), i) for i in range(len(self.notes))]
        pick_a = w.Dropdown(
            options=options, value=0, description="note A", layout=w.Layout(width="480px")
        )
        pick_b = w.Dropdown(
            options=options,
            value=min(1, len(options) - 1),
            description="note B",
            layout=w.Layout(width="480px"),
        )
        which = w.ToggleButtons(
            options=list(self.models),
            value="proposed" if "proposed" in self.models else next(iter(self.models)),
        )
        out = w.Output()

        def redraw(_=None) -> None:
            # The panel is written into the Output widget's state in one update, not printed
            # inside `with out:`. A notebook runner that mirrors Output widgets (nbclient, so
            # the book build) answers each output printed there with a message on the channel
            # where it waits for the cell's reply, and at the end of the cell the two can
            # cross: the reply then goes unread until the runner's cell timeout.
            s = self.swap(pick_a.value, pick_b.value, which.value)
            fig = self.swap_figure(s)
            png = io.BytesIO()
            fig.savefig(png, format="png", bbox_inches="tight")
            plt.close(fig)
            waves = self.audio(torch.stack([s.pitch_a_timbre_b, s.pitch_b_timbre_a]))
            sr = self.features.sample_rate
            with out.hold_sync():
                out.outputs = ()
                out.append_display_data(Image(png.getvalue()))
                for title, wave in zip(SWAP_TITLES, waves, strict=True):
                    out.append_stdout(f"{title}\n")
                    out.append_display_data(Audio(wave, rate=sr))

        for control in (pick_a, pick_b, which):
            control.observe(redraw, names="value")
        redraw()
        return w.VBox([pick_a, pick_b, which, out])


def swap_pitch_accuracy(
    explorer: LatentExplorer, model: str, pairs: int = 200, seed: int = 0
) -> float:
    """How often the swap (pitch of A, timbre of B) has its loudest CQT bin, averaged over
    frames, at A's pitch or an octave above it: a number for what the ear hears. Random
    pairs of different pitch and instrument.

    Chapter: 08_latent_explorer
    """
    if explorer.features.kind != "cqt":
        raise ConfigError(
            f"swap_pitch_accuracy: reads the pitch off the loudest CQT bin; these features are "
            f"FeatureConfig.kind={explorer.features.kind!r}, whose bands sit at no pitch: "
            "train on kind='cqt' to use it"
        )
    rng = np.random.default_rng(seed)
    notes = explorer.notes
    if len(set(notes.pitch.tolist())) < 2 or len(set(notes.instrument.tolist())) < 2:
        raise DataError(
            "swap_pitch_accuracy: the explorer's notes need at least two pitches and two "
            "instruments; give it more held-out notes"
        )
    hits, n = 0, 0
    while n < pairs:
        a, b = rng.integers(0, len(notes), 2)
        if notes.pitch[a] == notes.pitch[b] or notes.instrument[a] == notes.instrument[b]:
            continue
        s = explorer.swap(int(a), int(b), model)
        peak = round(explorer.features.bin_midi(int(s.pitch_a_timbre_b.mean(1).argmax())))
        hits += int(peak - int(notes.pitch[a]) in (0, 12))
        n += 1
    return hits / n
