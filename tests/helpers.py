"""Composing tiny configs the way the CLI does, for in-process tests."""

from hydra import compose, initialize_config_dir

from grubench.cli import CONF_DIR

TINY = [
    "model.hidden=8", "model.embed_dim=4", "task.seq_len=3", "task.train_size=64",
    "task.val_size=32", "task.test_size=32", "trainer.steps=6", "trainer.batch_size=8",
    "trainer.eval_every=3", "trainer.log_every=3", "trainer.eval_batch_size=32",
    "trainer.warmup_steps=2", "trainer.timing_warmup=1", "trainer.progress=false",
    "trainer.stream_repeats=0",  # its own jitted step: measured only where a test checks it
]


def tiny_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=[*TINY, *overrides])
