"""One tiny STAC run (teacher, 2 students) shared by the udet-stac, udet-pls, udet-noise-study and udet-glc app
tests: the training is the slow part, so it runs once per session."""
from __future__ import annotations

from tests.apps.test_train_app import SMALL_MODEL

DATA = ["dataset.generator.image_size=[64,64]", "dataset.generator.num_images={train:40,val:6,test:2}",
        "dataset.input_size=[64,64]"]
# trainer.steps_per_epoch=null: the teacher makes one pass (3 batches of 4 over 10 images), the student the
# steps of the batch composition: 1 labeled + 3 pseudo per batch, ceil(max(40/4, 10/1, 30/3)) = 10
STAC = [*DATA, *SMALL_MODEL, "trainer=fast", "trainer.epochs=1", "trainer.steps_per_epoch=null",
        "trainer.warmup_epochs=0", "trainer.validation_loss=false", "input.batch_size=4", "ssl.labeled_percent=25",
        "selection.tau=0.0", "selection.min_score=0.0", "selection.max_per_image=3", "ssl.selftrain_rounds=1"]
STAC_DIR = "outputs/runs/synthetic-tiny-stac/stac"
