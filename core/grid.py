"""The moment grid (docs/method.md section 1), defined once.

A moment is every ``MOMENT_STRIDE``-th tick of a ``GRID_RATE`` per second timeline (the paper's
30 fps: moment k at k x 16/30 s, its frame the last decoded frame at or before that time;
``core/timeline.py``; the decode stage's ``grid="frames"`` makes ticks decoded frames); its
image is ``FRAME_SIZE`` x ``FRAME_SIZE`` RGB (short side resized, centre crop); its audio is ``AUDIO_WINDOW`` s of mono
``SAMPLE_RATE`` Hz sound starting at the moment's time, turned into a (``LOGMEL_FRAMES``,
``LOGMEL_BANDS``) log-mel spectrogram; its features are ``FEATURE_DIM``-d.
"""
MOMENT_STRIDE = 16        # grid ticks per moment
GRID_RATE = 30.0          # grid ticks per second (the paper's 30 fps)
FRAME_SIZE = 112          # pixels, square
SAMPLE_RATE = 16000       # Hz, mono
AUDIO_WINDOW = 1.0        # seconds of audio per moment
LOGMEL_FRAMES = 101       # time steps of a moment's log-mel
LOGMEL_BANDS = 40         # mel bands
FEATURE_DIM = 512         # image / audio / image-audio feature size
CLIP_LEN = 16             # frames in a teacher clip
