"""The typed schema of every rlsys job. One schema for all jobs, so a key means the same everywhere.

Presets in `configs/` only set values; a key that is not declared here is an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from rlsys.config.choices import (ADVANTAGES, ENSEMBLES, IS_CORRECTIONS, IS_LEVELS, KL_ESTIMATORS, LOGGERS,
                                  LOSS_AGGREGATIONS, OPERATIONS, PREFERENCE_LOSSES, REWARD_TYPES, TINY_ARCHITECTURES,
                                  WEIGHT_SYNCS, each_of, one_of)
from rlsys.config.curate_schema import CurateConfig


@dataclass
class TinyModelConfig:
    """Shape of the model built when `model.path` is not given (vLLM's CPU backend wants head_dim 64)."""
    arch: str = one_of(*TINY_ARCHITECTURES)
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    vocab_size: int = 320  # the byte-level BPE trained on the job's text (tools' JSON wants more merges)
    num_experts: int = 0  # above 0: a Qwen3-MoE whose MLPs are this many experts (model=tiny_moe)
    experts_per_token: int = 2  # experts each token is routed to; each expert's MLP is intermediate_size / this


@dataclass
class LoraConfig:
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ModelConfig:
    path: Optional[str] = None  # any Hugging Face model directory; None builds a tiny model
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False
    dtype: str = one_of("auto", "float32", "bfloat16", "float16")  # auto: bf16 on GPU, fp32 on CPU
    # None: transformers' default (SDPA); flash_attention_2 on GPUs with flash-attn: packed rows run varlen
    attn_implementation: Optional[str] = None
    # mixture-of-experts models: weight of the router's load-balancing loss (None: the model config's
    # router_aux_loss_coef, 0.001 for Qwen3-MoE); logged as train/aux_loss
    router_aux_loss_coef: Optional[float] = None


@dataclass
class TaskConfig:
    """The embedded arithmetic task, used when `data.train` is not given."""
    seed: int = 0
    heldout_size: int = 500
    max_operand: int = 49  # problems a + b with min_operand <= a, b <= max_operand
    min_operand: int = 0
    operations: List[str] = each_of(*OPERATIONS, default=["+"])
    rejected_per_problem: int = 4  # preference training pairs per problem, each with another wrong answer
    near_misses: bool = False  # also a pair against every near miss of each problem (off by one, carry dropped)


@dataclass
class MixtureSource:
    """One source of a streamed mixture (data.mixture): a file, a folder of shards or hf:NAME, and its share."""
    path: Optional[str] = None
    name: Optional[str] = None  # in metrics (data/<name>_share) and checkpoints; default: the path's last part
    weight: float = 1.0  # its share of the tokens, relative to the other sources' weights
    epochs: Optional[int] = None  # passes over it at most; None: as many as the run needs
    columns: Dict[str, str] = field(default_factory=dict)  # over data.columns, for this source only


@dataclass
class StreamConfig:
    """Streaming input (pretrain, SFT): pieces of the sources are read and tokenised by Ray Data tasks on each rank."""
    piece_mb: float = 1.0  # jsonl files are read in byte ranges of about this size (parquet: row groups)
    num_workers: int = 1  # tokenising tasks in flight per source and rank (raise it for fast GPUs, small models)
    cpus_per_worker: float = 0.5  # logical CPUs each task asks Ray for
    prefetch_pieces: int = 1  # pieces tokenised ahead of the one being read
    trace: bool = False  # each rank writes a checksum of every sequence it trains on to output_dir/data_trace/


@dataclass
class DataConfig:
    train: Optional[str] = None  # jsonl / json / parquet file or folder, or hf:<dataset name>; None: embedded task
    # pretrain / sft: auto streams data.mixture, and data.train when its files hold more than 256 MB; true / false
    streaming: Any = one_of("auto", True, False)
    mixture: List[MixtureSource] = field(default_factory=list)  # weighted sources, streamed (instead of data.train)
    stream: StreamConfig = field(default_factory=StreamConfig)
    eval: Optional[str] = None  # held-out prompts with answers; None: the embedded held-out split
    split: str = "train"
    # rlsys name -> your column name, e.g. data.columns.messages=conversation
    columns: Dict[str, str] = field(default_factory=lambda: {name: name for name in DATA_COLUMNS})
    max_length: int = 256
    packing: bool = False
    on_error: str = one_of("fail", "skip")  # what to do with a malformed row
    task: TaskConfig = field(default_factory=TaskConfig)


DATA_COLUMNS = ("text", "messages", "prompt", "response", "answer", "chosen", "rejected", "label")


@dataclass
class TrainerConfig:
    max_steps: int = 100
    batch_size: int = 32  # sequences (RL: prompts) per step, over all ranks
    # tokens per rank per forward/backward; sequences are packed without padding and every rank gets the
    # same number of micro-batches (raise it on GPUs: 16k-64k)
    max_tokens_per_micro_batch: int = 4096
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    lr_schedule: str = one_of("cosine", "constant")
    warmup_steps: int = 10
    weight_decay: float = 0.0
    adam_betas: List[float] = field(default_factory=lambda: [0.9, 0.95])  # AdamW (beta1, beta2)
    adam_eps: float = 1e-8
    grad_clip: float = 1.0
    save_every: int = 0  # 0: only the final checkpoint
    keep_last: int = 2
    preempt_grace_s: float = 25.0  # SIGTERM: finish and save the step in flight within this, then stop
    eval_every: int = 0  # 0: evaluate only at the end
    eval_samples: int = 200
    log_every: int = 1
    # RL against a learned reward: stop when the gold reward (terms marked monitor: true) falls while the
    # proxy rises, and end with the best checkpoint by gold (compared over means of gold_window steps)
    stop_on_gold_drop: bool = False
    gold_window: int = 10
    gold_tolerance: float = 0.05  # how far the gold mean may fall below its best before the run stops


@dataclass
class DeepSpeedConfig:
    zero_stage: int = one_of(0, 1, 2, 3, default=2)
    offload_optimizer: bool = False
    offload_params: bool = False


@dataclass
class GroupResources:
    """One actor group: `num_ranks` actors, each on `gpus_per_rank` GPUs (or `cpus_per_rank` CPUs)."""
    num_ranks: int = 1
    gpus_per_rank: float = 1.0
    cpus_per_rank: float = 1.0


@dataclass
class ClusterConfig:
    # None: join the cluster `ray start` runs on this machine, else start a local Ray; "local": always a local Ray
    # of this job's own; "auto", host:port or ray://host:port joins that cluster
    address: Optional[str] = None
    device: str = one_of("auto", "cpu", "cuda")
    num_cpus: Optional[int] = None  # local Ray only: logical CPUs (default: what the roles ask for)
    num_gpus: Optional[int] = None  # local Ray only: GPUs to offer (default: those visible)
    placement_strategy: str = one_of("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
    colocate: bool = False  # roles share devices instead of each having its own
    policy: GroupResources = field(default_factory=lambda: GroupResources(num_ranks=2))
    reference: GroupResources = field(default_factory=GroupResources)
    teacher: GroupResources = field(default_factory=GroupResources)  # on-policy distillation's frozen teacher
    critic: GroupResources = field(default_factory=GroupResources)
    reward: GroupResources = field(default_factory=GroupResources)
    # role -> a custom Ray resource its bundles need, pinning the role to the nodes that offer it, e.g.
    # `ray start ... --resources='{"gpu_a": 8}'` and cluster.node_labels.rollout=gpu_a
    node_labels: Dict[str, Optional[str]] = field(
        default_factory=lambda: {role: None for role in ("policy", "reference", "teacher", "critic", "rollout")})


@dataclass
class RolloutConfig:
    backend: str = one_of("vllm", "hf")
    num_engines: int = 1
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5  # on CPU: fraction of RAM for vLLM's KV cache
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 8
    stop: List[str] = field(default_factory=list)
    # how new weights reach the engines (adapter: LoRA only); auto picks by device and layout (actors/weight_sync.py)
    weight_sync: str = one_of("auto", *WEIGHT_SYNCS)
    weight_sync_bucket_mb: float = 64.0
    # async RL: batch s is sampled by policy version s-1-K while earlier batches train (0: synchronous)
    max_staleness: int = 0


@dataclass
class AlgoConfig:
    # the estimator names the algorithm: group (GRPO), gae (PPO: the only one with a critic), rloo, reinforce_pp
    advantage: str = one_of(*ADVANTAGES)
    n_samples: int = 8
    scale_by_std: bool = True  # false: Dr.GRPO
    dynamic_sampling: bool = False  # DAPO: draw more prompts until batch_size groups have a score spread
    max_sample_rounds: int = 3  # dynamic sampling: generation rounds per step at most
    # DAPO's overlong shaping: the reward falls linearly by up to overlong_penalty over the last overlong_buffer
    # tokens before rollout.max_new_tokens (0: off); logged as reward/overlong
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0
    epochs: int = 1
    mini_batch_size: int = 0  # prompts per policy update; 0: the whole step batch
    clip_low: float = 0.2
    clip_high: float = 0.2
    dual_clip: Optional[float] = None
    loss_aggregation: str = one_of(*LOSS_AGGREGATIONS)
    kl_coef: float = 0.0
    kl_estimator: str = one_of(*KL_ESTIMATORS, default="k3")
    kl_in_reward: bool = False  # PPO style: penalty in the reward; otherwise a loss term (GRPO)
    kl_controller: str = one_of("fixed", "adaptive")
    kl_target: float = 0.1
    kl_horizon: int = 10000
    entropy_coef: float = 0.0
    gamma: float = 1.0
    lam: float = 0.95
    value_clip: float = 0.2
    critic_lr: float = 1e-3
    critic_warmup_steps: int = 0
    # off-policy correction by the sampler's logprobs, per token, sequence or geometric mean: tis (truncated IS),
    # mis (masked IS), reject (the mask of mis without its weights); auto: tis when rollout.max_staleness > 0
    is_correction: str = one_of("auto", *IS_CORRECTIONS)
    is_level: str = one_of(*IS_LEVELS)
    is_cap: float = 2.0  # tis: importance ratios above this are cut to it
    is_low: float = 0.5  # mis, reject: tokens (or responses) whose ratio leaves [is_low, is_high] are left out
    is_high: float = 2.0
    # preference learning (rm, dpo)
    beta: float = 0.1  # DPO / IPO strength of the pull towards the reference
    # sigmoid (DPO) | ipo | kto (unpaired thumbs up / down) | orpo (no reference)
    preference_loss: str = one_of(*PREFERENCE_LOSSES)
    label_smoothing: float = 0.0  # conservative DPO: the assumed share of flipped preference labels
    nll_coef: float = 0.0  # RPO: plus this times the chosen responses' per-token NLL (keeps them likely)
    reward_margin: float = 0.0  # rm: Bradley-Terry margin the chosen score must clear
    reward_heads: int = 1  # rm: an ensemble of heads on one body, each trained on its own bootstrap of the pairs
    desirable_weight: float = 1.0  # kto: weight of thumbs-up rows' loss
    undesirable_weight: float = 1.0  # kto: weight of thumbs-down rows' loss
    # online / iterative DPO: every round_steps steps the policy samples n_samples answers per prompt on the
    # rollout engines, the job's reward ranks them, and the best against the worst make the next pairs
    online: bool = False
    round_steps: int = 1
    pairs_per_prompt: int = 1  # best vs worst, then second best vs second worst, ...
    # guards against over-optimising a learned reward (grpo, ppo), each logged under reward/
    reward_normalize: bool = False  # the trained reward minus its running mean, over its running std
    reward_clip: float = 0.0  # the trained reward cut to [-clip, clip] after normalising (0: off)
    length_penalty: float = 0.0  # the trained reward minus this per response token


@dataclass
class EnvConfig:
    """Multi-turn RL (rlsys/envs): the policy acts in an environment over several turns. Neither name nor path:
    single-turn answers."""
    name: Optional[str] = None  # a built-in: calculator | retry
    path: Optional[str] = None  # your own: path/file.py:ClassName or package.module:ClassName
    kwargs: Dict[str, Any] = field(default_factory=dict)  # passed to the environment's constructor
    num_workers: int = 2  # Ray actors hosting the environments
    cpus_per_worker: float = 0.0
    timeout_s: float = 30.0  # every reset / step call; past it the episode ends with an error
    max_turns: int = 4  # assistant turns per episode
    max_total_tokens: int = 256  # prompt, model turns and observations together
    max_error_rate: float = 0.1  # share of a batch's episodes that may fail in user code before the run stops


@dataclass
class RewardTerm:
    type: str = one_of(*REWARD_TYPES)
    name: Optional[str] = None
    path: Optional[str] = None  # function: file.py:function; model: a reward model directory
    weight: float = 1.0
    pattern: Optional[str] = None
    url: Optional[str] = None  # remote: an `rlsys serve-reward` address, e.g. http://10.0.0.5:8000
    token: Optional[str] = None  # remote: its bearer token (default: $RLSYS_REWARD_TOKEN)
    timeout_s: float = 30.0  # remote: per attempt
    max_retries: int = 3  # remote: attempts after the first, with exponential backoff
    monitor: bool = False  # scored and logged (reward/<name>, reward/gold) but not trained on
    # model: how an ensemble reward model's heads (rlsys rm algo.reward_heads=K) make one score:
    # mean (minus ensemble_penalty x their std: uncertain answers score lower) | min
    ensemble: str = one_of(*ENSEMBLES)
    ensemble_penalty: float = 0.0


JUDGE_TEMPLATE = ("Rate the answer to the question from 0 (wrong) to 10 (perfect). Reply with the number only.\n"
                  "Question: {prompt}\nAnswer: {completion}\nScore:")


@dataclass
class JudgeConfig:
    """An LLM that scores completions (reward type `judge`): its reply is parsed into a score in [0, 1]."""
    model: Optional[str] = None  # a model folder served by its own vLLM engines, or "policy" (self-rewarding)
    template: str = JUDGE_TEMPLATE  # {prompt} and {completion} are filled in; sent as one user message
    score_pattern: str = r"-?\d+(?:\.\d+)?"  # the first match is the score
    min_score: float = 0.0  # scores are mapped from [min_score, max_score] to [0, 1]
    max_score: float = 10.0
    max_new_tokens: int = 8
    num_engines: int = 1
    max_parse_failure_rate: float = 0.5  # stop the run when a larger share of a batch's replies is unparsable
    parse_failure_score: float = 0.0  # the reward of an unparsable reply (counted in reward/judge_parse_failures)


@dataclass
class ServeConfig:
    """`rlsys serve-reward`: an HTTP endpoint over the job's `reward` terms."""
    host: str = "127.0.0.1"  # 0.0.0.0 exposes it to the network
    port: int = 8000
    token: Optional[str] = None  # bearer token; default $RLSYS_REWARD_TOKEN, else one is generated and printed
    max_request_bytes: int = 1048576
    max_batch: int = 1024  # completions per request


@dataclass
class DistillConfig:
    """`rlsys distill`: a teacher's knowledge moves into the student (model.path).

    Offline (the default): the teacher answers the prompts, the best answers become SFT data for the student.
    On-policy (on_policy=true): the student samples on the rollout engines (algo.n_samples a prompt, at
    rollout.temperature), the teacher scores every sampled token, and the student is trained with the clipped
    policy loss on the per-token advantage -(log p_student - log p_teacher): the reverse KL, token by token.
    `rlsys grpo` / `rlsys ppo` with distill.teacher set add the same term to their task advantages."""
    teacher: Optional[str] = None  # the teacher's model folder; it must share the student's tokenizer
    on_policy: bool = False
    teacher_kl_coef: float = 1.0  # on-policy: weight of the teacher's per-token signal (grpo / ppo: beside rewards)
    n_samples: int = 4  # offline: answers per prompt; more than one gives rejection sampling against the reward
    temperature: float = 0.7  # offline: the teacher's sampling temperature
    keep: str = one_of("best", "all")  # offline: best: one answer per prompt; all: every answer that passes min_reward
    min_reward: Optional[float] = None  # offline: drop answers scored below this (None keeps the best of every prompt)


@dataclass
class WandbConfig:
    project: str = "rlsys"
    entity: Optional[str] = None
    name: Optional[str] = None
    mode: str = one_of("online", "offline", "disabled")
    tags: List[str] = field(default_factory=list)


@dataclass
class WatchdogConfig:
    """Deadlines in seconds (0: none) of every remote call and every call into user code."""
    generate_s: float = 600.0  # one chunk of rollouts on an engine
    reward_s: float = 600.0  # scoring one batch: reward functions, models, judges, remote servers
    forward_s: float = 900.0  # logprobs / values / scores of one batch on a group
    train_s: float = 1800.0  # one optimizer step (and checkpoint save/load)
    sync_s: float = 600.0  # sending the policy's weights to the rollout engines
    load_s: float = 120.0  # importing user code the config names (reward functions, environments)
    start_s: float = 1800.0  # a role's actors starting: model load, DeepSpeed or vLLM engine set-up


@dataclass
class FaultToleranceConfig:
    max_restarts: int = 2  # actor deaths survived by restarting the actors from the latest checkpoint


PAIRWISE_TEMPLATE = ("Which answer to the question is better? Reply with A, B or tie.\n"
                     "Question: {prompt}\nAnswer A: {answer_a}\nAnswer B: {answer_b}\nBetter:")


@dataclass
class EvalConfig:
    # the terms held-out answers are scored by (eval/reward, eval/<term>); None: the job's `reward`; []: none
    reward: Optional[List[RewardTerm]] = None
    # rlsys eval: the checkpoints to score (empty: model.path), and a reference model each is compared with by
    # the judge (judge.model), in both orders
    models: List[str] = field(default_factory=list)
    against: Optional[str] = None
    pairwise_template: str = PAIRWISE_TEMPLATE  # {prompt}, {answer_a}, {answer_b}
    verdict_pattern: str = r"(?i)\b(A|B|tie)\b"  # the first match is the verdict; none counts as a tie


@dataclass
class PipelineConfig:
    rl: str = "grpo"  # the stages after SFT: a plan of config/pipeline_stages.py (agent: multi-turn GRPO with a tool)
    stages: Dict[str, List[str]] = field(default_factory=dict)  # stage -> overrides for that stage


@dataclass
class JobConfig:
    job: str = "sft"  # a job of rlsys/config/jobs.py
    output_dir: str = "outputs/${job}"
    seed: int = 0
    resume: Any = False  # auto | a checkpoint path | false
    logger: List[str] = each_of(*LOGGERS, default=["console", "jsonl"])
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    reward: List[RewardTerm] = field(default_factory=lambda: [RewardTerm(name="answer_match")])
    env: EnvConfig = field(default_factory=EnvConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    fault_tolerance: FaultToleranceConfig = field(default_factory=FaultToleranceConfig)
    watchdog: WatchdogConfig = field(default_factory=WatchdogConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
