"""The offline demo: the small synthetic_lesions dataset, split by patient."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.workdir = "runs/demo"

    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic_lesions"
    config.data.config = "small"  # a builder config name
    config.data.manual_dir = ml_collections.config_dict.placeholder(str)
    config.data.data_dir = ml_collections.config_dict.placeholder(str)  # None: <workdir>/datasets

    config.split = ml_collections.ConfigDict()
    config.split.strategy = "grouped"  # stratified | grouped (by patient) | official
    config.split.val_fraction = 0.1
    config.split.test_fraction = 0.2
    config.split.seed = 0

    config.model = ml_collections.ConfigDict()
    config.model.checkpoint = "tiny:qwen2_5_vl"  # a directory, a hub id, or tiny:<model_type> (written offline)
    # config.json's model_type; None: read from the checkpoint. Set, it is checked against the checkpoint, and an
    # unsupported one is refused before any work (configs/study.py sets it for every study model).
    config.model.family = ml_collections.config_dict.placeholder(str)
    config.model.revision = ml_collections.config_dict.placeholder(str)  # pin a hub revision
    config.model.dtype = "float32"  # or bfloat16
    config.model.cache = True  # keep converted params (orbax) so later runs skip reading the safetensors
    config.model.cache_dir = ml_collections.config_dict.placeholder(str)  # None: $JAXPROBE_CACHE_DIR or ~/.cache
    # A LoRA adapter from `jaxprobe finetune` (<workdir>/finetune/adapter): extract/probe/score the fine-tuned model.
    config.model.adapter = ml_collections.config_dict.placeholder(str)

    config.mesh = ml_collections.ConfigDict()  # extraction devices: data x model (params split over model)
    config.mesh.data = ml_collections.config_dict.placeholder(int)  # None: every device not on the model axis
    config.mesh.model = 1

    config.capture = ml_collections.ConfigDict()
    config.capture.sites = ("*",)  # globs over site names, e.g. ("vision.*", "llm.*.last_token")
    # A side length (every image squashed to that square: one token count, one compilation) or "native" (each
    # image keeps its aspect ratio within the family's pixel budget, floored to buckets of bucket_step tokens per
    # side: one compilation per bucket).
    config.capture.resolution = ml_collections.config_dict.FieldReference(64, field_type=object)
    config.capture.bucket_step = 4
    config.capture.batch_size = 8
    config.capture.chunk_rows = 32  # rows per FeatureStore commit (the unit of resume)
    config.capture.feature_dtype = "float32"
    config.capture.question = ("Which of the following best describes this medical image?\n{options}\n"
                               "Answer with the option's letter.")
    # The model's answer: option-letter scores (cheap, always parseable, calibrated), the generated reply parsed
    # into a class (the study's P_final), or both.
    config.capture.answer = "both"  # scores | generate | both
    config.capture.generate = ml_collections.ConfigDict()
    config.capture.generate.max_new_tokens = 64  # reasoning models (<think>...</think>) need more: 512
    config.capture.generate.temperature = 0.0  # 0: greedy, as transformers' generate(do_sample=False)
    config.capture.generate.top_p = 1.0  # nucleus sampling when temperature > 0
    config.capture.generate.seed = 0  # sampling keys and the option orders below
    config.capture.option_orders = 1  # reliability: K > 1 also asks with K - 1 random orders of the options
    config.capture.paraphrases = ()  # reliability: more question templates, each with an {options} field

    config.probe = ml_collections.ConfigDict()
    config.probe.kinds = ("ridge", "logistic")  # add "mlp" for the study's MLP protocol (slower)
    config.probe.sites = ("*",)  # globs over site names: probe only these (jaxprobe probe --sites GLOB)
    config.probe.ridge_lambdas = tuple(10.0 ** k for k in range(4, -3, -1))
    config.probe.logistic_lambdas = tuple(10.0 ** k for k in range(0, -6, -1))
    config.probe.folds = 5
    config.probe.grouped_folds = True  # patient-grouped folds: no patient on both sides of a fold
    config.probe.fold_scaling = "train"  # standardise with all training rows (one decomposition) or "fold"
    config.probe.seed = 0
    config.probe.control_task = True  # random labels per image, fitted by the selected probe: its capacity
    config.probe.permutations = 999  # test-label permutations per site (p-values down to 0.001)
    config.probe.bootstrap = 1000
    config.probe.ci_level = 0.95
    config.probe.max_iter = 100  # L-BFGS iterations per logistic fit and lambda (a cap; fits stop when certified)
    config.probe.tol = 1e-4  # logistic objectives certified within this relative gap of the optimum
    config.probe.memory_gb = 4.0  # features and decompositions held at once; sites are streamed in chunks
    config.probe.baseline_features = ml_collections.config_dict.placeholder(str)  # a random-weights model's store
    config.probe.mlp_seeds = (0,)
    config.probe.mlp_hidden = 256  # the study does not report its hidden size
    config.probe.mlp_epochs = 20

    config.scoring = ml_collections.ConfigDict()
    config.scoring.kind = "logistic"  # which probe kind's curve the scores and report are built from
    config.scoring.fhs_lambda = 0.2  # PAPER.md's volatility weight
    config.diagnosis = ml_collections.ConfigDict()  # when a failure mode is flagged (jaxprobe.scoring.diagnosis)
    config.diagnosis.reference_accuracy = ml_collections.config_dict.placeholder(float)  # e.g. a CNN on this split
    config.diagnosis.vision_min_skill = 0.5  # without a reference: share of the way from chance to 100% accuracy
    config.diagnosis.vision_margin = 0.02  # with a reference: how far below it still counts as on par
    config.diagnosis.connector_drop = 0.02  # accuracy lost from the connector's vision input to its output
    config.diagnosis.llm_drop = 0.03  # accuracy lost from the LLM's input to its weakest image-token layer
    config.diagnosis.answer_gap = 0.03  # difference between the answer and the last-layer probe
    config.diagnosis.min_test_images = 30  # fewer test images: every verdict is inconclusive
    config.diagnosis.alpha = 0.05  # significance level of the permutation test against chance

    # Fine-tuning (`jaxprobe finetune`; `jaxprobe run` with enabled=True runs before -> fine-tune -> after). PAPER.md
    # gives no LoRA hyper-parameters for the study, so the defaults are common Qwen2.5-VL LoRA SFT practice: rank
    # 8-16, alpha 16-32, lr 1e-4 with warmup and cosine decay, 1-3 epochs, adapters on the LLM only (vision tower
    # and connector frozen). configs/finetune_demo.py gives the tiny demo model a schedule it can learn with.
    config.finetune = ml_collections.ConfigDict()
    config.finetune.enabled = False
    config.finetune.answer = "letter"  # the taught answer: "letter" ("B") or "letter_and_name" ("B. benign")
    config.finetune.remat = False  # recompute activations in the backward pass (long prompts, small devices)
    config.finetune.export_peft = True  # also write a PEFT adapter (safetensors) for PyTorch users
    config.finetune.lora = ml_collections.ConfigDict()
    config.finetune.lora.rank = 8
    config.finetune.lora.alpha = 16.0
    config.finetune.lora.dropout = 0.05
    # regexes fully matching '/'-joined param paths of kernels: q/k/v/o/gate/up/down of every decoder layer
    config.finetune.lora.targets = (r"decoder/layers/(self_attn/[qkvo]_proj|mlp/(gate|up|down)_proj)/kernel",)
    config.finetune.train = _schedule(learning_rate=1e-4, epochs=3, batch_size=4, grad_accum=4, patience=2)
    # The "traditional model" reference: the vision tower + a linear head on its pooled last layer, cross-entropy,
    # trained on the same train split; its test accuracy is what the visual-representation verdict compares to.
    config.finetune.vision = ml_collections.ConfigDict()
    config.finetune.vision.enabled = True
    config.finetune.vision.method = "full"  # "full" fine-tuning of the tower, or "lora" on its blocks
    config.finetune.vision.lora = ml_collections.ConfigDict()
    config.finetune.vision.lora.rank = 8
    config.finetune.vision.lora.alpha = 16.0
    config.finetune.vision.lora.dropout = 0.05
    config.finetune.vision.lora.targets = (r"vision/blocks/.+/kernel",)
    config.finetune.vision.train = _schedule(learning_rate=5e-5, epochs=10, batch_size=16, grad_accum=1, patience=3)
    return config


def _schedule(learning_rate: float, epochs: int, batch_size: int, grad_accum: int,
              patience: int) -> ml_collections.ConfigDict:
    """One training schedule: AdamW with linear warmup and cosine decay, clipped gradients, early stopping."""
    schedule = ml_collections.ConfigDict()
    schedule.learning_rate = learning_rate  # peak, after warmup
    schedule.epochs = epochs
    schedule.batch_size = batch_size  # rows per micro-batch
    schedule.grad_accum = grad_accum  # micro-batches per optimizer step (effective batch = product)
    schedule.warmup_ratio = 0.03  # share of the optimizer steps spent warming up
    schedule.weight_decay = 0.0
    schedule.max_grad_norm = 1.0  # clip_by_global_norm
    schedule.eval_every = 0  # optimizer steps between evaluations on `val` (0: every epoch)
    schedule.patience = patience  # evaluations without improvement before stopping (0: never early)
    schedule.monitor = "accuracy"  # picks the kept weights: val "accuracy" (ties: lower loss), "loss" or "last"
    schedule.save_every = 50  # optimizer steps between checkpoints (resume point)
    schedule.seed = 0  # init, data order and dropout
    return schedule
