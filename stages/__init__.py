"""Extraction stages, one small module each, registered by name in ``STAGES``.

``decode`` (media -> moments, frames, audio windows), ``spectrogram`` (audio windows -> log-mel),
``teacher`` (R(2+1)D-18 clip descriptors, from decode's clips), ``features`` (student
image/audio/image-audio features); ``base`` holds the protocol and ``model`` the base of the two
network stages (one model per process, device placement, batches across videos).  Importing this
package registers them all; torch is imported only when a stage runs.
"""
from .base import STAGES, Stage, stable_hash  # noqa: F401
from . import decode, features, spectrogram, teacher  # noqa: F401  (registration)
