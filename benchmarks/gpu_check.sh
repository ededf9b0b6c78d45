#!/usr/bin/env bash
# The GPU paths for real, on one GPU: DeepSpeed bf16 over NCCL in Ray actors (pretrain, SFT, ZeRO 1/2/3
# throughput on a Qwen2.5-0.5B-shaped model) and GRPO with colocated roles and the transformers rollout backend.
# Usage: OUT=/tmp/gpu bash benchmarks/gpu_check.sh   (figures are printed and kept in $OUT/*/metrics.jsonl)
set -euo pipefail
OUT=${OUT:-/tmp/rlsys_gpu}
PY=${PYTHON:-python3}
rl() { "$PY" -m rlsys "$@" cluster.device=cuda cluster.policy.num_ranks=1 logger=[jsonl]; }
tail_metric() { "$PY" - "$1" "$2" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
values = [r[sys.argv[2]] for r in rows[len(rows) // 2:] if r.get(sys.argv[2]) is not None]  # skip warm-up
print(f"{sys.argv[1]}: {sys.argv[2]} median over the last {len(values)} steps = {statistics.median(values):.1f}")
PY
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

rl pretrain output_dir=$OUT/pretrain trainer.max_steps=300 trainer.batch_size=32 trainer.max_tokens_per_micro_batch=8192
rl sft output_dir=$OUT/sft model.path=$OUT/pretrain/checkpoints/final trainer.max_steps=100
rl grpo output_dir=$OUT/grpo model.path=$OUT/sft/checkpoints/final cluster.colocate=true rollout.backend=hf \
   trainer.max_steps=10 trainer.eval_every=5 trainer.max_tokens_per_micro_batch=8192
for f in pretrain sft grpo; do grep -h '"eval/accuracy"' $OUT/$f/metrics.jsonl | tail -1 | "$PY" -c "import json,sys; r=json.loads(sys.stdin.read()); print('$f', 'step', r['step'], 'eval/accuracy', r['eval/accuracy'])"; done
tail_metric $OUT/grpo perf/step_s
tail_metric $OUT/grpo perf/gen_tokens_per_s

for stage in 1 2 3; do
  rl pretrain output_dir=$OUT/zero$stage deepspeed.zero_stage=$stage trainer.max_steps=16 trainer.batch_size=4 \
     trainer.max_tokens_per_micro_batch=8192 data.max_length=2048 trainer.eval_samples=8 model.tiny.hidden_size=896 \
     model.tiny.num_heads=14 model.tiny.num_layers=24 model.tiny.intermediate_size=4864
  tail_metric $OUT/zero$stage perf/tokens_per_s
done
