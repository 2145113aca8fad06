#!/usr/bin/env python3
"""Keras 3's fine-tuning step rate, the reference for `finetune`'s (run by benches/finetune/speed.py):

    .cache/keras/bin/python benches/finetune/keras_step.py PHOTOS [--size 150] [--batch 16] [--epochs 2]

(`scripts/setup.sh --keras` makes .cache/keras.) The recipe's fine-tuning model: VGG16's conv base
with blocks 1-4 frozen, Flatten, Dense(256, relu), Dropout(0.5), Dense(1, sigmoid); SGD lr 1e-4,
momentum 0.9, binary cross-entropy; photos decoded, resized and augmented on the fly (shear, zoom,
horizontal flip, Keras 3's preprocessing layers in a tf.data pipeline), caffe preprocessing.
`weights=None`: the step does the same work with random weights, and nothing is downloaded.
Prints one JSON line: images/s over the last epoch (the first one warms up).
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("photos", help="class folders of photos (two classes)")
ap.add_argument("--size", type=int, default=150)
ap.add_argument("--batch", type=int, default=16)
ap.add_argument("--epochs", type=int, default=2)
args = ap.parse_args()
keras.utils.set_random_seed(0)

data = keras.utils.image_dataset_from_directory(args.photos, image_size=(args.size, args.size), batch_size=args.batch,
                                                label_mode="binary", shuffle=True, seed=0)
images = len(data.file_paths)
augment = keras.Sequential([keras.layers.RandomShear(0.2, 0.2), keras.layers.RandomZoom(0.2),
                            keras.layers.RandomFlip("horizontal")])
data = data.map(lambda x, y: (keras.applications.vgg16.preprocess_input(augment(x, training=True)), y),
                num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(args.size, args.size, 3))
for layer in base.layers:
    layer.trainable = layer.name.startswith("block5")
model = keras.Sequential([base, keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"),
                          keras.layers.Dropout(0.5), keras.layers.Dense(1, activation="sigmoid")])
model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9), loss="binary_crossentropy",
              metrics=["accuracy"])


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


times = EpochTimes()
model.fit(data, epochs=args.epochs, callbacks=[times], verbose=0)
print(json.dumps({"keras": keras.__version__, "tensorflow": tf.__version__, "images": images,
                  "seconds": round(times.seconds, 2), "images_per_second": round(images / times.seconds, 2)}))
