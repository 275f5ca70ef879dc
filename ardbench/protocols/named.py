"""The named protocols: standard, the demo and the small track, and the papers' faithful ones.

Faithful protocols are the ARD-lineage base (goldblum/AdversariallyRobustDistillation@779ade3
``main.py``, inherited by IAD and the KDIGA fork) plus each paper's departures, stated once
here and pinned by ``tests/golden/protocols.json`` (checked by hand against
``../shared/reference/methods.md``). Sources are the official code at the commits that file
pins; a method's protocol is its official script's, quirks included (``ard_as_coded`` schedule,
train-mode attacks...). ardbench always reports the last epoch (or the SWA model where the code
prescribes SWA); the official codes' test-set checkpoint selection is never reproduced.
"""

from __future__ import annotations

from typing import Any

from .eps import Eps
from .protocol import Protocol, derive
from .sections import AttackConfig, EvalConfig, TrainConfig

NAMED_PROTOCOLS: dict[str, Protocol] = {}
"""Every built-in protocol by name, in definition order (``registered.py`` registers them)."""


def register_protocol(protocol: Protocol) -> Protocol:
    """Collect ``protocol`` (this module's own list; the registry reads it on first use)."""
    if protocol.name in NAMED_PROTOCOLS:
        raise ValueError(f"protocol {protocol.name!r} is defined twice")
    NAMED_PROTOCOLS[protocol.name] = protocol
    return protocol


# every column on every test point (all 10,000 of CIFAR)
FULL_EVAL = EvalConfig(attacks=("clean", "fgsm", "pgd20", "cw", "aa"))
# the per-method attack keys of the demo and the small track: the official code's random
# start, start clamp and attack-time BatchNorm mode
METHOD_ATTACK_KEYS = ("attack.random_start", "attack.clamp_start", "attack.student_mode")

# ------------------------------------------------------------------------------ standard

STANDARD_CIFAR10 = register_protocol(
    Protocol(
        name="standard-cifar10",
        description=(
            "One protocol for every method (a fair comparison): Linf 8/255, PGD-10 step 2/255 "
            "uniform start, attack in eval mode; 200 epochs, batch 128, SGD 0.9, lr 0.1, "
            "wd 5e-4, x0.1 at 100 and 150; Clean/FGSM/PGD-20/CW/AA on all 10,000 test points; "
            "last epoch."
        ),
        dataset="cifar10",
        kind="standard",
        attack=AttackConfig(random_start="uniform", clamp_start=False, student_mode="eval"),
        train=TrainConfig(
            epochs=200,
            batch_size=128,
            lr=0.1,
            momentum=0.9,
            weight_decay=5e-4,
            lr_schedule="multistep",
            milestones=(100, 150),
            seed=0,
        ),
        eval=FULL_EVAL,
        source="ardbench decision: the common ARD-lineage budget with the usual wd 5e-4",
    )
)
register_protocol(
    derive(
        STANDARD_CIFAR10,
        "standard-cifar100",
        STANDARD_CIFAR10.description.replace("(a fair comparison)", "on CIFAR-100"),
        dataset="cifar100",
        kind="standard",
        source=STANDARD_CIFAR10.source,
    )
)

# ------------------------------------------------------------------- demo and small track

register_protocol(
    Protocol(
        name="demo",
        description=(
            "The whole pipeline in minutes on a CPU: the embedded digits data (1,438 train / "
            "359 test, 32x32), Linf 8/255, PGD-5 step 2/255, 12 epochs, batch 64, lr 0.1, "
            "wd 5e-4, x0.1 at 10; Clean and PGD-20 on the 359 test digits."
        ),
        dataset="digits",
        kind="demo",
        attack=AttackConfig(steps=5),
        train=TrainConfig(epochs=12, batch_size=64, weight_decay=5e-4, milestones=(10,), seed=0),
        eval=EvalConfig(attacks=("clean", "pgd20")),
        per_method=METHOD_ATTACK_KEYS,
        source="ardbench decision (a smoke-scale protocol, not a benchmark)",
    )
)

# tests/test_protocols.py checks this against the arrays in ../shared/data when present
SMALL_TRACK_FINGERPRINT = "1b075c042f56a0e8915c7713c671b9fcdb482cb565393c4a7f48fd003e78dbf6"

SMALL_TRACK_DATA = (
    "npz:../shared/data/cifar10/cifar10_exact_train_subset.npz"
    "+../shared/data/cifar10/cifar10_exact_test.npz"
)

SMALL_TRACK_ZERO_CROP = register_protocol(
    Protocol(
        name="cifar10-exact-linf2",
        description=(
            "The first small track (CPU scale): the exact CIFAR-10 images of ../shared/data "
            "(8,068 training images, the first 1,017 test images), Linf 2/255, PGD-10 step "
            "0.5/255; 8 epochs, batch 128, lr 0.1, wd 5e-4, x0.1 at 5 and 7; zero-padded crop "
            "+ flip; Clean/FGSM/PGD-20/CW; last epoch."
        ),
        retired=(
            "it misleads: its ResNet-4B teacher is 80.9 % right on the training images but "
            "62.8 % on them after the zero-padded crop (ardbench check-teacher), so the "
            "distilled students learn a wrong answer on a third of their inputs and rank below "
            "plain training. Use cifar10-exact-linf2-flip."
        ),
        dataset=SMALL_TRACK_DATA,
        data_fingerprint=SMALL_TRACK_FINGERPRINT,
        attack=AttackConfig(eps=Eps(2, 255), step=Eps(1, 510), steps=10),
        train=TrainConfig(epochs=8, batch_size=128, weight_decay=5e-4, milestones=(5, 7), seed=0),
        eval=EvalConfig(attacks=("clean", "fgsm", "pgd20", "cw"), eps=Eps(2, 255)),
        per_method=METHOD_ATTACK_KEYS,
        source="ardbench decision (baselines/common/cifar10_exact_linf2_resnet4b.yaml names the teacher)",
    )
)

register_protocol(
    derive(
        SMALL_TRACK_ZERO_CROP,
        "cifar10-exact-linf2-flip",
        (
            "The real small track (CPU scale): the exact CIFAR-10 images of ../shared/data "
            "(8,068 training images, the first 1,017 test images), Linf 2/255, PGD-10 step "
            "0.5/255; 8 epochs, batch 128, lr 0.1, wd 5e-4, x0.1 at 5 and 7; horizontal flip "
            "only (no crop: the ResNet-4B teacher is 80.3 % right on flipped training images, "
            "80.9 % plain, 62.8 % after a zero-padded crop); Clean/FGSM/PGD-20/CW (AA from "
            "later evaluations); last epoch. Each method keeps its official random start and "
            "attack-time BatchNorm mode."
        ),
        train={"crop": "none", "flip": True},
        source="ardbench decision from `ardbench check-teacher` (baselines/common/README.md)",
    )
)

# ---------------------------------------------------------------------------- faithful

ARD_LINEAGE_CIFAR10 = register_protocol(
    Protocol(
        name="ard-lineage-cifar10",
        description=(
            "ARD's main.py, the base the ARD lineage inherits: PGD-10 8/255 step 2/255, uniform "
            "start not clamped, attack in train mode; 200 epochs, batch 128, SGD 0.9, lr 0.1, "
            "wd 2e-4, the as-coded schedule (one decay, x0.1 from epoch 100)."
        ),
        dataset="cifar10",
        kind="base",
        attack=AttackConfig(random_start="uniform", clamp_start=False, student_mode="train"),
        train=TrainConfig(
            epochs=200,
            batch_size=128,
            lr=0.1,
            momentum=0.9,
            weight_decay=2e-4,
            lr_schedule="ard_as_coded",
            milestones=(100, 150),
            seed=0,
        ),
        eval=FULL_EVAL,
        source="goldblum/AdversariallyRobustDistillation@779ade3 main.py",
    )
)


# Methods without an attack (kd, natural) keep the library's attack defaults (eval mode), so
# their recorded settings do not suggest a train-mode attack they never run.
NO_ATTACK = {"student_mode": "eval"}


def _faithful(
    method: str, dataset: str, source: str, description: str, base: Protocol, **changes: Any
) -> Protocol:
    name = f"{method.replace('_', '-')}-{dataset}"
    if changes.get("name"):
        name = changes.pop("name")
    if dataset != base.dataset:
        changes["dataset"] = dataset
    return register_protocol(
        derive(base, name, description, kind="faithful", method=method, source=source, **changes)
    )


for _ds, _batch in (("cifar10", 128), ("cifar100", 256)):
    _faithful(
        "ard",
        _ds,
        "goldblum/AdversariallyRobustDistillation@779ade3 main.py",
        f"ARD as coded on {_ds}: the ARD-lineage base, batch {_batch}.",
        ARD_LINEAGE_CIFAR10,
        train={"batch_size": _batch},
    )
    _faithful(
        "kd",
        _ds,
        "RulinShao/AdversariallyRobustDistillation@12e774f main.py --mode kd (ARD's KD)",
        f"Hinton KD as the ARD lineage runs it on {_ds}: the ARD-lineage base, batch {_batch} "
        "(no attack).",
        ARD_LINEAGE_CIFAR10,
        attack=NO_ATTACK,
        train={"batch_size": _batch},
    )
    _faithful(
        "iad",
        _ds,
        "ZFancy/IAD@a8091a8 IAD-I.py, IAD-II.py",
        f"IAD as coded on {_ds}: the ARD-lineage base, batch 128 on both datasets, seed 1.",
        ARD_LINEAGE_CIFAR10,
        train={"seed": 1},
    )
    _faithful(
        "rslad",
        _ds,
        "zibojia/RSLAD@c40e04f {resnet18,mobilenet_v2}_rslad_" + _ds + ".py",
        f"RSLAD as coded on {_ds}: 0.001-Gaussian start, attack in eval mode; 300 epochs, "
        "x0.1 after epochs 215, 260, 285 (multistep), seed 0. (The scripts also set cuDNN's "
        "deterministic mode: run-to-run determinism only, left to train.deterministic.)",
        ARD_LINEAGE_CIFAR10,
        attack={"random_start": "gaussian_0.001", "student_mode": "eval"},
        train={"epochs": 300, "lr_schedule": "multistep", "milestones": (215, 260, 285)},
    )
    _faithful(
        "vargap",
        _ds,
        "ardbench specification (no official code): ../shared/reference/methods.md 2.9",
        f"The variance-gap method on {_ds} as ardbench specifies it: uniform start, attack in "
        "eval mode; 200 epochs, x0.1 at 100 and 150 (multistep), wd 2e-4.",
        ARD_LINEAGE_CIFAR10,
        attack={"student_mode": "eval"},
        train={"lr_schedule": "multistep"},
    )

_faithful(
    "kdiga",
    "cifar10",
    "RulinShao/AdversariallyRobustDistillation@12e774f main.py --mode kdiga*",
    "KDIGA as the fork codes it: the ARD-lineage base with the attack step 16/255/10 = 1.6/255 "
    "(used by variant ard only; clean and rs have no attack).",
    ARD_LINEAGE_CIFAR10,
    attack={"step": "1.6/255"},
)
_faithful(
    "kd",
    "cifar10",
    "HobbitLong/RepDistiller@b84f547 train_student.py",
    "Hinton KD as RepDistiller trains it: 240 epochs, batch 64, lr 0.05 (0.01 for "
    "MobileNetV2: set in that recipe), wd 5e-4, x0.1 at 150, 180, 210.",
    ARD_LINEAGE_CIFAR10,
    name="kd-repdistiller-cifar10",
    default_for_method=False,
    train={
        "epochs": 240,
        "batch_size": 64,
        "lr": 0.05,
        "weight_decay": 5e-4,
        "lr_schedule": "multistep",
        "milestones": (150, 180, 210),
    },
)
_faithful(
    "natural",
    "cifar10",
    "ZFancy/IAD@a8091a8 pre_train/ST.py",
    "Natural training as IAD's ST.py: 200 epochs, batch 128, lr 0.1 decided on epoch + 1 "
    "(x0.1 from epoch index 99, x0.01 from 149), wd 2e-4, seed 1, deterministic.",
    ARD_LINEAGE_CIFAR10,
    attack=NO_ATTACK,
    train={"lr_schedule": "piecewise_epoch_plus_one", "seed": 1, "deterministic": True},
    eval=EvalConfig(attacks=("clean", "fgsm", "pgd20")),
)
_faithful(
    "pgd_at",
    "cifar10",
    "ZFancy/IAD@a8091a8 pre_train/AT.py",
    "PGD-AT as IAD's AT.py (IAD's teacher): uniform start clamped to [0,1], attack in eval "
    "mode; lr decided on epoch + 1 (x0.1 from epoch index 99, x0.01 from 149), seed 1.",
    ARD_LINEAGE_CIFAR10,
    attack={"clamp_start": True, "student_mode": "eval"},
    train={"lr_schedule": "piecewise_epoch_plus_one", "seed": 1},
)
_faithful(
    "pgd_at",
    "cifar10",
    "locuslab/robust_overfitting train_cifar.py (PreActResNet-18)",
    "PGD-AT as Rice et al.: uniform start clamped, attack in train mode; wd 5e-4, x0.1 at "
    "epochs 100 and 150 (the code decays per iteration at 50 % and 75 %).",
    ARD_LINEAGE_CIFAR10,
    name="pgd-at-rice-cifar10",
    default_for_method=False,
    attack={"clamp_start": True, "student_mode": "train"},
    train={"weight_decay": 5e-4, "lr_schedule": "multistep", "seed": 0},
)
_faithful(
    "trades",
    "cifar10",
    "yaodongyu/TRADES train_trades_cifar10.py@e20f7b9",
    "TRADES' WRN recipe: eps 0.031, step 0.007, 10 steps, 0.001-Gaussian start, attack in eval "
    "mode; 76 epochs, x0.1 from (1-based) epoch 75, wd 2e-4, seed 1.",
    ARD_LINEAGE_CIFAR10,
    attack={
        "eps": "0.031",
        "step": "0.007",
        "random_start": "gaussian_0.001",
        "student_mode": "eval",
    },
    # adjust_learning_rate uses 1-based epochs: x0.1 from epoch 75 (0-based 74); the 90 / 100
    # decays are never reached in 76 epochs
    train={"epochs": 76, "lr_schedule": "multistep", "milestones": (74, 89, 99), "seed": 1},
)
_faithful(
    "trades",
    "cifar10",
    "goldblum/AdversariallyRobustDistillation issue #2 (TRADES MobileNetV2 baseline)",
    "TRADES on the ARD-lineage budget: 8/255, step 2/255, 0.001-Gaussian start, eval mode; "
    "200 epochs, x0.1 at 100 and 150 (multistep), seed 1.",
    ARD_LINEAGE_CIFAR10,
    name="trades-ard-lineage-cifar10",
    default_for_method=False,
    attack={"random_start": "gaussian_0.001", "student_mode": "eval"},
    train={"lr_schedule": "multistep", "seed": 1},
)

# ------------------------------------------------------------------ later methods (§3)

for _ds in ("cifar10", "cifar100"):
    _adaad = _faithful(
        "adaad",
        _ds,
        "boyellow/AdaAD@9e5c6e5 main.py (README command: --epsilon 8 --step_size 2)",
        f"AdaAD as coded on {_ds}: 0.001-Gaussian start, attack in eval mode (through teacher "
        "and student); 200 epochs, x0.1 at 100 and 150, wd 5e-4, seed 42. The argparse "
        "defaults (16/255, step 4/255) are the recipe radius16.",
        ARD_LINEAGE_CIFAR10,
        attack={"random_start": "gaussian_0.001", "student_mode": "eval"},
        train={"weight_decay": 5e-4, "lr_schedule": "multistep", "seed": 42},
    )
    _faithful(
        "adaiad",
        _ds,
        "boyellow/AdaAD@9e5c6e5 main.py --method AdaAD_with_IAD1",
        f"AdaIAD as coded on {_ds}: AdaAD's protocol.",
        _adaad,
    )
    _faithful(
        "igdm",
        _ds,
        "HongsinLee/saad@295121c igdm.py, args.py",
        f"IGDM as coded on {_ds}: 0.001-Gaussian start, attack in eval mode; 200 epochs, x0.1 "
        "at 100 and 150, wd 2e-4, seed 0 (the committed swapped eps/step is the recipe "
        "as_committed).",
        ARD_LINEAGE_CIFAR10,
        attack={"random_start": "gaussian_0.001", "student_mode": "eval"},
        train={"lr_schedule": "multistep"},
    )
    _faithful(
        "mtard",
        _ds,
        f"zhaoshiji123/MTARD@6480a1b mtard_resnet18_{_ds}.py",
        f"MTARD as coded on {_ds}: RSLAD's protocol (0.001-Gaussian start, eval mode; 300 "
        "epochs, x0.1 after 215, 260, 285, wd 2e-4, seed 0).",
        NAMED_PROTOCOLS[f"rslad-{_ds}"],
    )
    _faithful(
        "peeraid",
        _ds,
        "jaewonalive/PeerAiD@cd12e92 main.py, configs/*.json, training_scripts/*.sh",
        f"PeerAiD as coded on {_ds}: 0.001-Gaussian start, attack in eval mode; 300 epochs, lr "
        "x0.1 at 0-based epochs 214, 259, 284, wd 2e-4; the reported model is the SWA of the "
        "end-of-epoch students from epoch 214 (parameters averaged, BatchNorm recomputed). The "
        "official code sets no seed (ardbench: 0).",
        ARD_LINEAGE_CIFAR10,
        attack={"random_start": "gaussian_0.001", "student_mode": "eval"},
        train={"epochs": 300, "lr_schedule": "multistep", "milestones": (214, 259, 284)},
        checkpoint={"rule": "swa", "swa_start": 214},
    )

_faithful(
    "saad",
    "cifar10",
    "HongsinLee/saad@295121c saad.py, attacks.py, main.sh",
    "SAAD as coded: 0.001-Gaussian start, attack in eval mode; 200 epochs, x0.1 after "
    "epochs 100 and 150, wd 2e-4 (hard-coded), seed 0; the reported model is the SWA of the "
    "end-of-epoch students from 1-based epoch 95 (0-based 94; parameters averaged, BatchNorm "
    "recomputed).",
    ARD_LINEAGE_CIFAR10,
    attack={"random_start": "gaussian_0.001", "student_mode": "eval"},
    train={"lr_schedule": "multistep"},
    checkpoint={"rule": "swa", "swa_start": 94},
)
_faithful(
    "adr",
    "cifar10",
    "yuyuwu5/ADR@515da0e src/advTrainer.py, config/cifar10/resnet18_pgd_sgd_adr.gin",
    "ADR (PGD-AT base) as coded: uniform start clamped to [0,1], attack in train mode; 200 "
    "epochs, SGD 0.9 with Nesterov, wd 5e-4, x0.1 at 100 and 150, seed 0; last epoch (no "
    "teacher).",
    ARD_LINEAGE_CIFAR10,
    attack={"clamp_start": True, "student_mode": "train"},
    train={"weight_decay": 5e-4, "nesterov": True, "lr_schedule": "multistep"},
)
_faithful(
    "adr",
    "cifar100",
    "yuyuwu5/ADR@515da0e src/advTrainer.py, config/cifar100/resnet18_pgd_sgd_adr.gin",
    "ADR (PGD-AT base) on cifar100 as coded: the CIFAR-10 protocol (tau 1.5 -> 1.0 is the "
    "recipe's method_config).",
    NAMED_PROTOCOLS["adr-cifar10"],
)
# Fair-ARD (CIFAR-10 only): one protocol per base script, all with Nesterov SGD; the method's
# default (base ard) is fair-ard-cifar10, the others are named by their recipes
_FAIR = "NISP-official/Fair-ARD@910c8cd"
_faithful(
    "fair_ard",
    "cifar10",
    f"{_FAIR} Fair-ARD.py",
    "Fair-ARD as coded: the ARD-lineage base (uniform start, train-mode attack, one lr decay "
    "at 100) with Nesterov SGD; no seed in the script (ardbench: 0).",
    ARD_LINEAGE_CIFAR10,
    train={"nesterov": True},
)
_faithful(
    "fair_ard",
    "cifar10",
    f"{_FAIR} Fair-IAD.py",
    "Fair-IAD as coded: the ARD-lineage base with Nesterov SGD, seed 1 (cuDNN's deterministic "
    "mode, run-to-run determinism only, is left to train.deterministic as for iad-cifar10).",
    ARD_LINEAGE_CIFAR10,
    name="fair-iad-cifar10",
    default_for_method=False,
    train={"nesterov": True, "seed": 1},
)
for _base in ("rslad", "mtard"):
    _faithful(
        "fair_ard",
        "cifar10",
        f"{_FAIR} Fair-{_base.upper()}.py",
        f"Fair-{_base.upper()} as coded: RSLAD's protocol (0.001-Gaussian start, eval-mode "
        "attack; 300 epochs, x0.1 after 215, 260, 285, wd 2e-4, seed 0) with Nesterov SGD.",
        NAMED_PROTOCOLS["rslad-cifar10"],
        name=f"fair-{_base}-cifar10",
        default_for_method=False,
        train={"nesterov": True},
    )
_faithful(
    "absld",
    "cifar10",
    "zhaoshiji123/ABSLD@7407c3a resnet18_absld_cifar10.py",
    "ABSLD as coded: RSLAD's protocol (0.001-Gaussian start, eval-mode attack; 300 epochs, "
    "x0.1 after 215, 260, 285, SGD 0.9 without Nesterov, wd 2e-4, seed 0; cuDNN's "
    "deterministic mode left to train.deterministic as for rslad-cifar10).",
    NAMED_PROTOCOLS["rslad-cifar10"],
)
