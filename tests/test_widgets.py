"""The latent explorer (chapter 8) on toy notes and small untrained models: swaps, labels,
picks, and the ipywidgets panel."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pitchtimbre.config import DataConfig, FeatureConfig, ModelConfig
from pitchtimbre.data import load_dataset
from pitchtimbre.errors import ConfigError, DataError
from pitchtimbre.model import PitchTimbreVAE
from pitchtimbre.widgets import LatentExplorer, Swap, swap_pitch_accuracy


@pytest.fixture
def explorer(toy_folder) -> LatentExplorer:
    features = FeatureConfig()
    ds = load_dataset(
        DataConfig(source=str(toy_folder), heldout_per_family=1), features, progress=False
    )
    torch.manual_seed(0)
    small = ModelConfig(hidden=8, layers=2, kernel_size=3)
    models = {
        name: PitchTimbreVAE(features.n_bins, small).eval() for name in ("vanilla", "proposed")
    }
    return LatentExplorer(ds.heldout(), models, features)


def test_a_swap_decodes_the_pitch_of_one_note_with_the_timbre_of_the_other(explorer):
    net = explorer.models["proposed"]
    zp, zt = explorer._latents["proposed"]
    s = explorer.swap(0, 1)
    shape = explorer.notes.features[0].shape
    assert all(x.shape == shape for x in (*s.reconstructions, s.pitch_a_timbre_b))
    with torch.no_grad():
        assert torch.allclose(s.pitch_a_timbre_b, net.decode(zp[:1], zt[1:2])[0])
        assert torch.allclose(s.pitch_b_timbre_a, net.decode(zp[1:2], zt[:1])[0])
    assert not torch.allclose(s.pitch_a_timbre_b, s.pitch_b_timbre_a)


def test_audio_starts_griffin_lim_from_the_seeded_phase(explorer):
    spec = explorer.swap(0, 1).pitch_a_timbre_b
    first, again, other = (explorer.audio(spec, seed=s) for s in (0, 0, 1))
    assert first.shape == other.shape and first.ndim == 1
    assert (first == again).all() and not (first == other).all()
    assert (explorer.audio(spec) == first).all()  # seed 0 unless asked


def _playing(explorer: LatentExplorer, pitch: int) -> torch.Tensor:
    """A spectrogram [F, T] whose loudest bin, every frame, is MIDI ``pitch``."""
    f = explorer.features
    spec = torch.zeros(f.n_bins, f.n_frames)
    spec[round((pitch - f.fmin_midi) * f.bins_per_octave / 12)] = 5.0
    return spec


def test_swap_pitch_accuracy_counts_swaps_that_play_as_pitch(explorer, monkeypatch):
    notes = explorer.notes
    pitch = [int(p) for p in notes.pitch]

    def swapping(plays_a: bool):
        def swap(a: int, b: int, model: str = "proposed") -> Swap:
            as_a, as_b = _playing(explorer, pitch[a]), _playing(explorer, pitch[b])
            if not plays_a:  # each swap follows its timbre's note
                as_a, as_b = as_b, as_a
            return Swap(a, b, (as_a, as_b), (as_a, as_b), as_a, as_b)

        return swap

    monkeypatch.setattr(explorer, "swap", swapping(plays_a=True))
    assert swap_pitch_accuracy(explorer, "proposed", pairs=20) == 1.0
    monkeypatch.setattr(explorer, "swap", swapping(plays_a=False))
    assert swap_pitch_accuracy(explorer, "proposed", pairs=20) == 0.0  # B's pitch, never A's

    explorer.notes = notes.subset(notes.pitch == notes.pitch[0])
    with pytest.raises(DataError, match="at least two pitches and two instruments"):
        swap_pitch_accuracy(explorer, "proposed")


def test_pick_takes_the_loudest_note_of_a_family_nearest_a_pitch(explorer):
    records = explorer.notes.records
    family = records[0].instrument_family_str
    i = explorer.pick(family, 100)
    ours = [r for r in records if r.instrument_family_str == family]
    assert records[i].pitch == max(r.pitch for r in ours)
    assert records[i].velocity == max(r.velocity for r in ours if r.pitch == records[i].pitch)
    assert explorer.label(i).endswith(f"MIDI {records[i].pitch}, velocity {records[i].velocity}")
    with pytest.raises(KeyError, match=r"no held-out note of family 'kazoo'; families are \['"):
        explorer.pick("kazoo", 60)


def test_the_widget_writes_its_panel_into_the_output_widgets_state(explorer):
    # The panel (figure, then a title and a player per swap) is the Output widget's state,
    # set in one update: nothing is printed inside the widget's context, where a notebook
    # runner that mirrors Output widgets (nbclient) would answer each output on the channel
    # it waits on for the cell's reply.
    pick_a, pick_b, which, out = explorer.widget().children
    kinds = [(o["output_type"], sorted(o.get("data", {}))) for o in out.outputs]
    assert kinds == [
        ("display_data", ["image/png", "text/plain"]),
        ("stream", []),
        ("display_data", ["text/html", "text/plain"]),
        ("stream", []),
        ("display_data", ["text/html", "text/plain"]),
    ]
    titles = [o["text"] for o in out.outputs if o["output_type"] == "stream"]
    assert titles == ["pitch of A, timbre of B\n", "pitch of B, timbre of A\n"]
    assert all("data:audio/wav;base64," in o["data"]["text/html"] for o in out.outputs[2::2])
    assert (pick_a.value, pick_b.value, which.value) == (0, 1, "proposed")

    first = out.outputs
    pick_b.value = 2  # moving a note redraws the panel, replacing it
    assert len(out.outputs) == 5 and out.outputs[0] != first[0]


def test_static_swaps_show_each_figure_once_and_leave_none_open(explorer, monkeypatch):
    # An open pyplot figure is shown a second time by the inline backend at the cell's end,
    # cut off from its pair's players.
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    plt.close("all")
    explorer.static_swaps([(0, 1), (1, 2)])
    figures = [obj for obj in shown if isinstance(obj, Figure)]
    assert len(figures) == 2 and len(shown) == 2 * (2 + 2 * 4)
    assert plt.get_fignums() == []


def test_mel_features_get_band_numbers_and_no_pitch_reading(explorer):
    """Mel bands widen with frequency: no MIDI axis, and the swap check (which reads a pitch
    off the loudest bin) refuses them instead of counting at the wrong pitches."""
    import matplotlib.pyplot as plt

    explorer.features = FeatureConfig(kind="mel")
    with pytest.raises(ConfigError, match=r"kind='mel'.*train on kind='cqt'"):
        swap_pitch_accuracy(explorer, "proposed")
    with pytest.raises(ConfigError, match="only CQT bins sit at MIDI pitches"):
        explorer.features.bin_midi(3)
    fig = explorer.swap_figure(explorer.swap(0, 1))
    ax = fig.axes[0]
    plt.close(fig)
    assert ax.get_ylabel() == "mel band"
    assert ax.images[0].get_extent()[2:] == [-0.5, FeatureConfig().n_bins - 0.5]
    cqt = FeatureConfig()
    explorer.features = cqt
    fig = explorer.swap_figure(explorer.swap(0, 1))
    ax, *_, colour_bar = fig.axes
    plt.close(fig)
    assert ax.get_ylabel() == "CQT bin (MIDI)"
    # originals, reconstructions and swaps on one colour scale, so that they compare
    assert len({a.images[0].get_clim() for a in fig.axes[:6]}) == 1
    assert colour_bar.get_ylabel() == "log magnitude (normalised)"
    assert ax.images[0].get_extent()[2:] == [
        cqt.fmin_midi - 0.5,
        cqt.bin_midi(cqt.n_bins - 1) + 0.5,
    ]


def _clip(spec: torch.Tensor) -> np.ndarray:
    """A stand-in clip that identifies its spectrogram: its mean over bins."""
    return spec.mean(dim=-2).numpy()


def _traced_audio(explorer: LatentExplorer, monkeypatch) -> list[np.ndarray]:
    """Clips that identify their spectrogram (``_clip``), and the list of the clips handed to
    IPython's Audio, in the order the page shows them."""
    import IPython.display

    played: list[np.ndarray] = []
    real = IPython.display.Audio
    monkeypatch.setattr(explorer, "audio", lambda spec, seed=0: _clip(spec))
    monkeypatch.setattr(
        IPython.display, "Audio", lambda wave, rate: played.append(wave) or real(wave, rate=rate)
    )
    return played


def test_the_swap_figure_shows_each_spectrogram_under_its_own_title(explorer):
    import matplotlib.pyplot as plt

    s = explorer.swap(0, 2)
    fig = explorer.swap_figure(s)
    shown = [(ax.get_title(), ax.images[0].get_array()) for ax in fig.axes if ax.images]
    plt.close(fig)
    expected = [
        (f"A: {explorer.label(0)}", s.originals[0]),
        (f"B: {explorer.label(2)}", s.originals[1]),
        ("A reconstructed", s.reconstructions[0]),
        ("B reconstructed", s.reconstructions[1]),
        ("pitch of A, timbre of B", s.pitch_a_timbre_b),
        ("pitch of B, timbre of A", s.pitch_b_timbre_a),
    ]
    assert [title for title, _ in shown] == [title for title, _ in expected]
    for (_, image), (title, spec) in zip(shown, expected, strict=True):
        assert np.allclose(np.asarray(image), spec.numpy()), title


def test_static_swaps_play_each_clip_under_its_own_title(explorer, monkeypatch):
    from IPython.display import Markdown

    played = _traced_audio(explorer, monkeypatch)
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    explorer.static_swaps([(0, 1), (2, 0)])
    titles = [o.data for o in shown if isinstance(o, Markdown) and not o.data.startswith("**")]
    assert len(titles) == len(played) == 8
    for (a, b), first in (((0, 1), 0), ((2, 0), 4)):
        s = explorer.swap(a, b)
        expected = (*s.originals, s.pitch_a_timbre_b, s.pitch_b_timbre_a)
        for i, spec in enumerate(expected):
            assert np.array_equal(played[first + i], _clip(spec)), titles[first + i]
        assert titles[first + 2 : first + 4] == [
            "pitch of A, timbre of B",
            "pitch of B, timbre of A",
        ]


def test_the_widget_plays_each_swap_under_its_own_title(explorer, monkeypatch):
    played = _traced_audio(explorer, monkeypatch)
    pick_a, pick_b, which, out = explorer.widget().children
    s = explorer.swap(0, 1)
    assert [o["text"] for o in out.outputs if o["output_type"] == "stream"] == [
        "pitch of A, timbre of B\n",
        "pitch of B, timbre of A\n",
    ]
    assert len(played) == 2
    assert np.array_equal(played[0], _clip(s.pitch_a_timbre_b))
    assert np.array_equal(played[1], _clip(s.pitch_b_timbre_a))
    pick_a.value, which.value = 2, "vanilla"  # each change redraws: the last is (2, 1, vanilla)
    s = explorer.swap(2, pick_b.value, "vanilla")
    assert len(played) == 6
    assert np.array_equal(played[4], _clip(s.pitch_a_timbre_b))
    assert np.array_equal(played[5], _clip(s.pitch_b_timbre_a))
