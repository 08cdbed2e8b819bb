"""One tiny 2-strategy AL loop (random, entropy; 2 rounds of a 40-image pool) shared by the udet-al-loop and
udet-al-eval app tests: the loop is the slow part of both, so it runs once per session."""
from __future__ import annotations

from tests.apps.test_train_app import SMALL_MODEL

DATA = ["dataset.generator.image_size=[64,64]", "dataset.generator.num_images={train:40,val:8,test:6}",
        "dataset.input_size=[64,64]"]
LOOP = [*DATA, *SMALL_MODEL, "trainer=fast", "trainer.epochs=1", "trainer.steps_per_epoch=2",
        "trainer.warmup_epochs=0", "trainer.validation_loss=false", "input.batch_size=4", "al.budget=[25,25,50]",
        "al.rounds=2", "al.score_floor=0.0"]
STRATEGIES = ["entropy", "random"]          # sorted: the order of al_eval's outputs
RUNS = "outputs/runs/synthetic-tiny-al"
AL = f"{RUNS}/al"
