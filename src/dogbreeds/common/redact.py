"""Credentials never reach a log line, an error message or MLflow.

Two kinds of secret can travel with the study's values: a password inside a URL
(`postgresql://mlflow:secret@db/mlflow`, `https://user:token@host/images.tar`) and the tokens
that tools read from the environment (Kaggle's API key, MLflow's and S3's credentials), which a
library may echo in an exception. `redact` replaces both with `***`.
"""

from __future__ import annotations

import os
import re

# Environment variables whose values are credentials, wherever they might be echoed.
SECRET_VARS = (
    "KAGGLE_KEY",
    "KAGGLE_API_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
# scheme://user:password@ -> scheme://user:***@ (the user name stays: it helps debugging)
URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][\w+.-]*://[^/\s:@]*):[^@\s/]+@")


def redact(text: str) -> str:
    """`text` with every URL password and every known secret's value replaced by ***."""
    for var in SECRET_VARS:
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:  # a one-letter "secret" would shred the message
            text = text.replace(secret, "***")
    return URL_PASSWORD.sub(r"\g<head>:***@", text)
