"""Suite-wide settings: quiet TensorFlow, keep Keras/MLflow state inside the test temp dirs."""
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_HOME", os.path.join(tempfile.gettempdir(), "udet-keras-home"))
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "false")
