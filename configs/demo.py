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
    return config
