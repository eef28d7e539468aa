"""Every file name a run writes, in one place; the layout of a run folder.

    OUTPUT_DIR/
      summary.json              both stages' figures, final_model, final_adapter   (SUMMARY)
      report.html, report_files/ the run report                                     (REPORT, REPORT_FILES)
      sft/ | dpo/               one folder per stage (or the stage's trainer output_dir)
        fingerprint.json        the settings the stage was made with; decides skip/resume (FINGERPRINT)
        recipe.resolved.yaml    the recipe as run, defaults filled in, secrets masked  (RESOLVED_RECIPE)
        log_history.json        the trainer's log history, written at every log         (LOG_HISTORY)
        summary.json            the stage's figures                                     (SUMMARY)
        checkpoint-N/           the trainer's checkpoints (resumed under the same fingerprint)
        adapter_config.json     a LoRA stage's PEFT config (base named portably)         (ADAPTER_CONFIG)
        merged/                 a LoRA stage's adapter merged into its base              (MERGED)
      eval/                     the eval stage (recipe `eval:`), see eval/stage.py         (EVAL)
        summary.json            every bench's summary for every evaluated stage
        sft/ | dpo/<bench>/     answers, verdicts, summary.json, eval_fingerprint.json

Kept free of imports so the recipe loader, the stages and the publishers can all read it.
"""

FINGERPRINT = "fingerprint.json"
SUMMARY = "summary.json"
RESOLVED_RECIPE = "recipe.resolved.yaml"
LOG_HISTORY = "log_history.json"
REPORT = "report.html"
REPORT_FILES = "report_files"
MERGED = "merged"
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's, in a LoRA stage folder; its base is made portable
EVAL = "eval"
