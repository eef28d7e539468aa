#!/bin/bash
# Multi-node launch under Slurm: one task per node, each running accelerate for its node's 8 GPUs.
#   sbatch --nodes 2 configs/slurm_multi_node.sh recipes/zephyr-7b-beta/full.yaml [key=value ...]
#SBATCH --job-name=zephyr-train
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=96
#SBATCH --exclusive
#SBATCH --output=logs/%x-%j.out
set -euo pipefail
RECIPE=${1:?usage: sbatch --nodes N configs/slurm_multi_node.sh RECIPE [key=value ...]}
shift
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}
# Check once, on the submitting node's view of the job, before any GPU time is spent.
zephyr-train check "$RECIPE" "$@" --accelerate-config configs/multi_node.yaml \
  --gpus $((SLURM_NNODES * GPUS_PER_NODE)) --gpu-memory "${GPU_MEMORY:-80}"
srun --kill-on-bad-exit=1 bash -c "accelerate launch --config_file configs/multi_node.yaml \
  --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
  --machine_rank \$SLURM_NODEID --main_process_ip $MAIN_ADDR --main_process_port $MAIN_PORT \
  -m zephyr_train run $RECIPE $*"
