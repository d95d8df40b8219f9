"""Study configuration (``studies/*.yaml``), validated with pydantic before anything trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, UnknownNameError
from .files import format_validation_error, load_yaml

__all__ = ["StudyConfig", "DataSpec", "TeacherSpec", "NastySpec", "AdversarialSpec", "SearchSpec", "FinalSpec",
           "PrescreenSpec", "DiswotSpec", "RaySpec", "FidelitySpec"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataSpec(_Strict):
    name: str = "digits"
    root: str | None = None
    seed: int = 0
    val_fraction: float = Field(0.15, gt=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    train_fraction: float = Field(1.0, gt=0, le=1)
    download: bool = False
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from . import data

        data.DATASETS.canonical(v, where="data.name")
        return v

    def create(self, base_dir: Path | None = None):
        from . import data

        root = self.root
        if root is not None and base_dir is not None and not Path(root).expanduser().is_absolute():
            root = str((base_dir / root).resolve())  # relative roots are relative to the study file
        elif root is not None:
            root = str(Path(root).expanduser())
        return data.create(self.name, root=root, seed=self.seed, val_fraction=self.val_fraction,
                           test_fraction=self.test_fraction, train_fraction=self.train_fraction,
                           download=self.download, **self.kwargs)


def _known_model(v: str, where: str) -> str:
    from . import models

    if not (v.startswith("tv/") or ":" in v):
        models.MODELS.canonical(v, where=where)
    return v


class AdversarialSpec(_Strict):
    """The normally trained network a nasty teacher is trained against (default: the teacher's own
    architecture, trained with the teacher's optimiser settings)."""

    name: str | None = None
    kwargs: dict[str, Any] = Field(default_factory=dict)
    epochs: int | None = Field(None, ge=1, description="epochs of its CE training (default: the teacher's)")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        return None if v is None else _known_model(v, "teacher.nasty.adversarial.name")


class NastySpec(_Strict):
    """Train the teacher as a nasty teacher (Ma et al., ICLR 2021): CE − ω τ² KL against ``adversarial``."""

    omega: float = Field(0.04, gt=0, allow_inf_nan=False)
    temperature: float = Field(4.0, gt=0, allow_inf_nan=False)
    adversarial: AdversarialSpec = Field(default_factory=AdversarialSpec)


class TeacherSpec(_Strict):
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None
    epochs: int = Field(30, ge=1)
    lr: float = Field(0.05, gt=0)
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(5e-4, ge=0)
    seed: int = 0
    train_fraction: float = Field(
        1.0, gt=0, le=1,
        description="fraction of the training split the teacher trains on; may exceed the student's "
        "(a teacher trained on all labelled data, a student distilled on a subset). Val/test splits are "
        "the same for both.",
    )
    nasty: NastySpec | None = Field(None, description="train an undistillable (nasty) teacher; see NastySpec")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        return _known_model(v, "teacher.name")

    @model_validator(mode="after")
    def _nasty_is_trained(self) -> TeacherSpec:
        if self.nasty is not None and self.checkpoint:
            raise ValueError("teacher.nasty trains the teacher; it cannot be combined with teacher.checkpoint")
        return self


SAMPLERS = ("random", "tpe", "cmaes", "nsga2", "mcts", "evolution")
PRUNERS = ("none", "median", "sha", "hyperband")


class PrescreenSpec(_Strict):
    """Prune a trial before training when its zero-cost proxy score falls below the running ``1 - keep``
    quantile of the scores seen so far (after ``warmup`` scored trials)."""

    proxy: str = "diswot"
    keep: float = Field(0.25, gt=0, le=1)
    warmup: int = Field(20, ge=0)
    batch_size: int = Field(64, ge=2)


class DiswotSpec(_Strict):
    """``search.mode: diswot``: training-free search over student architectures maximising a proxy, then KD
    training of the top-k."""

    proxy: str = "diswot"
    method: Literal["random", "evolution"] = "evolution"
    candidates: int = Field(200, ge=1, description="proxy evaluations (training-free)")
    top_k: int = Field(3, ge=1, description="candidates KD-trained afterwards")
    population: int = Field(20, ge=2)
    batch_size: int = Field(64, ge=2)


class RaySpec(_Strict):
    """Resources of ``search.backend: ray``. ``address: auto`` joins a running cluster (``ray start --head``),
    ``ray://host:10001`` a remote one; without it a local Ray is started for the run and shut down after it."""

    address: str | None = None
    cpus_per_trial: int = Field(1, ge=1, description="CPUs each trial reserves (= its torch threads)")
    gpus_per_trial: float = Field(0.0, ge=0, description="GPUs each trial reserves; a fraction packs "
                                  "several small students on one GPU (e.g. 0.25)")
    max_concurrent: int | None = Field(None, ge=1, description="trials running at once (default: as many as "
                                       "the resources allow)")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray started without an address "
                                 "(default: all of this machine's)")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None or v == "auto" or v.startswith("ray://") or (":" in v and v.rsplit(":", 1)[1].isdigit()):
            return v
        raise ValueError(f"address must be auto, host:port or ray://host:port, got {v!r}")

    @field_validator("gpus_per_trial")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if v > 1 and v != int(v):
            raise ValueError(f"gpus_per_trial above 1 must be a whole number of GPUs, got {v}")
        return v


class FidelitySpec(_Strict):
    """Cheaper trials (Auto-KD's sparse training): each searched trial — baselines included — trains on a fixed
    random ``data_fraction`` of the training split (stratified, fixed by the study seed) for ``epochs`` epochs;
    recipes record full fidelity and the final retrain runs at it. ``benchmarks/fidelity_rank.py`` measures
    how well the cheap ranking agrees with the full one."""

    data_fraction: float = Field(1.0, gt=0, le=1)
    epochs: int | None = Field(None, ge=1, description="epochs per trial (default: search.epochs or the space's)")


class SearchSpec(_Strict):
    mode: Literal["search", "diswot"] = "search"
    backend: Literal["optuna", "ray"] = "optuna"
    sampler: str = "tpe"
    sampler_kwargs: dict[str, Any] = Field(default_factory=dict)
    pruner: str = "median"
    pruner_kwargs: dict[str, Any] = Field(default_factory=dict)
    trials: int = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0)
    storage: str | None = Field(None, description="sqlite:///path.db (default: <study>/study.db), "
                                "postgresql://user@host/db, journal:///path.log or memory")
    heartbeat_interval: int = Field(30, ge=1, description="seconds between a running trial's heartbeats (RDB)")
    heartbeat_grace: int = Field(120, ge=2, description="a trial whose heartbeat stopped this long is failed "
                                 "and retried by another worker (RDB storages)")
    epochs: int | None = Field(None, ge=1, description="epoch budget per trial (overrides the space's)")
    seeds_per_trial: int = Field(1, ge=1, description="seeds each trial trains; its value is their mean val acc")
    baselines: bool = True
    baseline_students: int = Field(
        4, ge=1, description="enqueue the CE-only and KD baselines for each student choice of the space when it "
        "has at most this many (else for the first), so every trial is compared with its own student")
    baseline_temperature: float = Field(4.0, gt=0)
    baseline_kd_weight: float = Field(0.9, ge=0)
    baseline_ce_weight: float = Field(0.1, ge=0)
    prescreen: PrescreenSpec | None = None
    diswot: DiswotSpec = Field(default_factory=DiswotSpec)
    ray: RaySpec = Field(default_factory=RaySpec, description="resources of search.backend: ray")
    fidelity: FidelitySpec = Field(default_factory=FidelitySpec)

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        from .search import samplers

        samplers.SAMPLERS.canonical(v, where="search.sampler")
        return v

    @field_validator("pruner")
    @classmethod
    def _pruner(cls, v: str) -> str:
        from .search import pruners

        pruners.PRUNERS.canonical(v, where="search.pruner")
        return v


class FinalSpec(_Strict):
    epochs: int | None = Field(None, ge=1, description="epochs for the final retrain (default: the recipe's)")
    seeds: int = Field(5, ge=1, description="seeds of the final retrain (paired with the baselines' seeds)")


class StudyConfig(_Strict):
    """A study: data, teacher, search space and how to search it. Outputs go to ``<study dir>/<name>/``."""

    name: str
    description: str = ""
    seed: int = 0
    device: str = "auto"
    data: DataSpec = Field(default_factory=DataSpec)
    teacher: TeacherSpec
    teacher_cache: str = Field(
        "auto", description="auto | online | cached | views:K — auto: cached teacher outputs when the training "
        "transform is deterministic, K=8 stored augmented views per image (FKD) for a parameterised "
        "augmentation (CIFAR's pad-crop+flip, an image folder's resized-crop+flip, fake's crop_flip), else online")
    teacher_cache_topk: int | None = Field(
        None, ge=1, description="views cache: keep the teacher's top-k probabilities + the rest mass instead of "
        "all logits (FKD's compressed soft labels, for many classes)")
    teacher_cache_feature_mb: float = Field(
        1024.0, ge=0, description="views cache: store the teacher's stage features with the views when they take "
        "at most this many MB, else run the teacher online for feature-level terms")
    space: str
    search: SearchSpec = Field(default_factory=SearchSpec)
    final: FinalSpec = Field(default_factory=FinalSpec)
    output_dir: str | None = None

    source: Path | None = Field(None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v) or v in (".", ".."):
            raise ValueError("name must be letters, digits, '_', '-' or '.' (it names the output folder)")
        if len(v) > 100:
            raise ValueError(f"name must be at most 100 characters (it names the output folder), got {len(v)}")
        return v

    @field_validator("teacher_cache")
    @classmethod
    def _teacher_cache(cls, v: str) -> str:
        from .train.source_modes import parse_teacher_cache

        parse_teacher_cache(v)
        return v

    @field_validator("output_dir")
    @classmethod
    def _output_dir(cls, v: str | None) -> str | None:
        if v is None:
            return v
        p = Path(v)
        if not p.is_absolute() and ".." in p.parts:
            raise ValueError("a relative output_dir must stay inside the study file's folder (no '..'); "
                             "give an absolute path to write elsewhere")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {v!r}")
        return v

    # ---- paths ---------------------------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    @property
    def study_dir(self) -> Path:
        if self.output_dir:
            p = Path(self.output_dir)
            return p if p.is_absolute() else self.base_dir / p
        return self.base_dir / self.name

    @property
    def space_path(self) -> Path:
        p = Path(self.space)
        if p.is_absolute():
            return p
        for cand in (self.base_dir / p, Path.cwd() / p, self.base_dir.parent / p):
            if cand.is_file():
                return cand
        return self.base_dir / p

    @property
    def storage_url(self) -> str:
        if self.search.storage:
            return self.search.storage
        return f"sqlite:///{(self.study_dir / 'study.db').as_posix()}"

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> StudyConfig:
        path = Path(path)
        data = load_yaml(path, what="study file")
        try:
            cfg = cls.model_validate(data)
        except ValidationError as e:
            raise ConfigError(f"{path}: {format_validation_error(e)}") from None
        except (ConfigError, UnknownNameError) as e:
            raise ConfigError(f"{path}: {e}") from None
        cfg.source = path.resolve()
        return cfg
