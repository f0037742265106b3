from __future__ import annotations

import dataclasses

import pytest

from pitchtimbre import config as config_module
from pitchtimbre.config import (
    DataConfig,
    ExperimentConfig,
    FeatureConfig,
    LossConfig,
    ModelConfig,
    PairConfig,
    RenderConfig,
    TrainConfig,
    profile_config,
    resolve_profile,
)
from pitchtimbre.errors import ConfigError


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: RenderConfig(programs=(0, 200)), "RenderConfig.programs"),
        (lambda: RenderConfig(pitch_range=(72, 48)), "RenderConfig.pitch_range"),
        (lambda: RenderConfig(velocities=()), "RenderConfig.velocities"),
        (lambda: RenderConfig(renderer="fluid"), "RenderConfig.renderer"),
        (lambda: DataConfig(heldout_per_family=0), "DataConfig.heldout_per_family"),
        (lambda: FeatureConfig(kind="stft"), "FeatureConfig.kind"),
        (lambda: FeatureConfig(n_bins=200), "FeatureConfig.n_bins"),
        (lambda: PairConfig(proportions=(1, 0, 0)), "PairConfig.proportions"),
        (lambda: PairConfig(proportions=(0, 0, 0, 0)), "PairConfig.proportions"),
        (lambda: LossConfig(lambda_pitch=-1), "LossConfig.lambda_pitch"),
        (lambda: TrainConfig(device="tpu"), "TrainConfig.device"),
        (lambda: TrainConfig(steps=0), "TrainConfig.steps"),
        (lambda: ModelConfig(leaky_slope=1.0), "ModelConfig.leaky_slope"),
        (lambda: ModelConfig(logvar_range=(8.0, -12.0)), "ModelConfig.logvar_range"),
        (lambda: ModelConfig(logvar_range=(-12.0, float("inf"))), "ModelConfig.logvar_range"),
    ],
)
def test_bad_values_are_rejected_naming_the_field(factory, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        factory()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.amp": "no"}, r"TrainConfig\.amp: must be True or False, got 'no'"),
        ({"data.render.pitch_check": "False"}, r"RenderConfig\.pitch_check: must be True or"),
        ({"data.velocities": "80"}, r"DataConfig\.velocities: must be a tuple of ints or None"),
        ({"data.pitch_range": ["a", "b"]}, r"DataConfig\.pitch_range: must be a tuple of 2"),
        ({"data.families": "guitar"}, r"DataConfig\.families: must be a tuple of strs or None"),
        ({"data": 5}, r"ExperimentConfig\.data: must be a DataConfig, got 5"),
        ({"train": "fast"}, r"ExperimentConfig\.train: must be a TrainConfig, got 'fast'"),
        ({"data.render": None}, r"DataConfig\.render: must be a RenderConfig, got None"),
        ({"train.steps": 100.0}, r"TrainConfig\.steps: must be an int"),
        ({"train.steps": True}, r"TrainConfig\.steps: must be an int"),
        ({"loss.lambda_pitch": "20"}, r"LossConfig\.lambda_pitch: must be a number"),
        ({"loss.on": "means"}, r"LossConfig\.on: must be one of 'mean', 'sample'"),
    ],
)
def test_a_value_of_the_wrong_type_is_rejected_naming_the_field(overrides, message):
    """A string for a bool would switch it on, a string for a tuple of ints would fail far
    from here or match substrings: each is refused where it is set."""
    with pytest.raises(ConfigError, match=message):
        profile_config("ci").with_overrides(overrides)


def test_the_type_check_takes_lists_for_tuples_and_checks_direct_construction():
    cfg = DataConfig(velocities=[60, 90], families=["brass"])  # as JSON would give them
    assert cfg.velocities == (60, 90) and cfg.families == ("brass",)
    with pytest.raises(ConfigError, match=r"ExperimentConfig\.train: must be a TrainConfig"):
        ExperimentConfig(train={"steps": 10})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"RenderConfig\.velocities: must be a tuple of ints"):
        RenderConfig(velocities=(60, 90.5))
    assert LossConfig(lambda_pitch=20).lambda_pitch == 20  # an int is a number
    import numpy as np

    computed = DataConfig(pitch_range=(np.int64(48), np.int64(72)), velocities=[np.int32(90)])
    assert computed.pitch_range == (48, 72) and type(computed.pitch_range[0]) is int
    assert computed == DataConfig(pitch_range=(48, 72), velocities=(90,))  # the same setting
    assert type(TrainConfig(lr=np.float32(1e-3)).lr) is float
    # the number written, not float32's nearest 0.699999988: one setting, one cache key
    assert TrainConfig(grad_clip=np.float32(0.7)) == TrainConfig(grad_clip=0.7)
    assert LossConfig(lambda_pitch=np.float16(0.1)).lambda_pitch == 0.1
    with np.printoptions(legacy="1.13"):  # prints 0.333333: the setting must not follow it
        assert TrainConfig(grad_clip=np.float32(1 / 3)).grad_clip == 0.33333334
    for wrong in ("cudax", "cuda:abc", "cuda:-1", "gpu"):
        with pytest.raises(ConfigError, match=r"TrainConfig\.device: must be .*'cuda\[:N\]'"):
            TrainConfig(device=wrong)
    assert (
        profile_config("ci")
        .with_overrides({"features.offset_s": np.array([0.064], dtype=np.float32)[0]})
        .features.offset_s
        == 0.064
    )
    assert TrainConfig(amp=np.bool_(False)).amp is False
    assert profile_config("ci").with_overrides(
        {"data.render.pitch_range": np.array([48, 60])}
    ).data.render.pitch_range == (48, 60)
    assert DataConfig(pitch_range=None).pitch_range is None


@pytest.mark.parametrize("source", ["soundfont", "other/FluidR3_GM.sf2", "bank.SF3"])
def test_rendered_notes_must_cover_the_feature_frames(source):
    """A .sf2/.sf3 source renders with data.render as the embedded SoundFont does."""
    with pytest.raises(ConfigError, match=r"data\.render\.hold_s"):
        ExperimentConfig(data=DataConfig(source=source, render=RenderConfig(hold_s=0.3)))
    with pytest.raises(ConfigError, match=r"features\.sample_rate must equal"):
        ExperimentConfig(data=DataConfig(source=source), features=FeatureConfig(sample_rate=22050))


def test_recorded_notes_take_no_render_settings():
    ExperimentConfig(data=DataConfig(source="nsynth/", render=RenderConfig(hold_s=0.3)))


def test_a_group_given_as_a_mapping_replaces_only_the_fields_it_names():
    gpu = profile_config("gpu")
    fewer = gpu.with_overrides({"features": {"n_frames": 32}, "data": {"render": {"hold_s": 1.5}}})
    assert fewer.features == dataclasses.replace(gpu.features, n_frames=32)
    assert fewer.data.render == dataclasses.replace(gpu.data.render, hold_s=1.5)
    assert fewer.data.source == gpu.data.source
    with pytest.raises(ConfigError, match=r"ExperimentConfig\.data\.render: no field 'hold'"):
        gpu.with_overrides({"data": {"render": {"hold": 1.5}}})


def test_profiles_and_environment(monkeypatch):
    monkeypatch.setattr(config_module, "cuda_available", lambda: False)
    assert resolve_profile() == "cpu"
    monkeypatch.setenv("PITCHTIMBRE_PROFILE", "ci")
    assert resolve_profile() == "ci"
    assert resolve_profile("gpu") == "gpu"  # the argument wins
    monkeypatch.setenv("PITCHTIMBRE_PROFILE", "laptop")
    with pytest.raises(ConfigError, match="PITCHTIMBRE_PROFILE"):
        resolve_profile()


def test_gpu_profile_is_automatic_with_cuda(monkeypatch):
    monkeypatch.delenv("PITCHTIMBRE_PROFILE", raising=False)
    monkeypatch.setattr(config_module, "cuda_available", lambda: True)
    assert resolve_profile() == "gpu"
    assert profile_config().profile == "gpu"


def test_profiles_differ_in_size():
    ci, cpu, gpu = (profile_config(p) for p in ("ci", "cpu", "gpu"))
    assert ci.train.steps < cpu.train.steps < gpu.train.steps
    assert len(ci.data.render.pitches) < len(cpu.data.render.pitches)
    assert ci.model.hidden < cpu.model.hidden < gpu.model.hidden


def test_round_trip_and_overrides():
    cfg = profile_config("ci")
    again = ExperimentConfig.from_dict(cfg.to_dict())
    assert again == cfg
    vanilla = cfg.with_overrides({"loss.lambda_pitch": 0.0, "loss.lambda_timbre": 0.0})
    assert vanilla.loss.is_vanilla and not cfg.loss.is_vanilla
    assert vanilla.model == cfg.model
    with pytest.raises(ConfigError, match=r"no field 'loss\.lambda'"):
        cfg.with_overrides({"loss.lambda": 1.0})
    with pytest.raises(ConfigError, match=r"LossConfig\.beta"):
        cfg.with_overrides({"loss.beta": -2.0})
    with pytest.raises(ConfigError, match="unknown field"):
        ExperimentConfig.from_dict({**cfg.to_dict(), "colour": "red"})


def test_cqt_bins_map_to_midi_with_any_resolution():
    assert FeatureConfig().bin_midi(12) == FeatureConfig().fmin_midi + 12
    fine = FeatureConfig(bins_per_octave=36, n_bins=36 * 4)
    assert fine.bin_midi(3) == fine.fmin_midi + 1 and fine.bin_midi(36) == fine.fmin_midi + 12


def test_an_int_given_to_a_float_field_is_the_same_setting():
    from pitchtimbre.training import training_settings

    base = ExperimentConfig()
    as_int = base.with_overrides({"loss.lambda_pitch": int(base.loss.lambda_pitch)})
    assert as_int.to_dict() == base.to_dict()
    assert isinstance(as_int.to_dict()["loss"]["lambda_pitch"], float)
    assert training_settings(as_int) == training_settings(base)  # what the model key hashes
    assert isinstance(LossConfig(margin=5).to_dict()["margin"], float)
    assert ModelConfig(sigma=1).to_dict()["sigma"] == 1.0  # optional floats too
    assert ModelConfig(sigma=None).to_dict()["sigma"] is None
    assert isinstance(TrainConfig(steps=3000).to_dict()["steps"], int)  # int fields stay ints


def test_drawing_batch_by_batch_keeps_the_keys_of_earlier_models():
    from pitchtimbre.training import training_settings

    base = ExperimentConfig()
    assert "draw_batches" not in training_settings(base)["pairs"]  # the pairs drawn as before
    at_once = base.with_overrides({"pairs.draw_batches": 25})  # other pairs: another model
    assert training_settings(at_once)["pairs"]["draw_batches"] == 25
    side_by_side = base.with_overrides({"train.parallel_models": 2})  # the same model
    assert training_settings(side_by_side) == training_settings(base)
