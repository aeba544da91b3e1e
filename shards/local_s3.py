"""A local S3-compatible object store (moto in server mode on 127.0.0.1) for development and tests.

    with LocalS3() as s3:          # sets AWS_ENDPOINT_URL and test credentials in os.environ
        s3.create_bucket("kiln")   # then s3://kiln/... works for fsspec, and s3a://kiln/... for Spark

It needs the `moto[server]` package (the `dev` extra). Nothing here is used in production paths.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .local_ports import free_ports

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class LocalS3:
    def __init__(self, port: int | None = None, set_env: bool = True):
        self.port = port or free_ports(1)[0]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.set_env = set_env
        self._proc: subprocess.Popen | None = None
        self._saved_env: dict[str, str | None] = {}

    def start(self) -> "LocalS3":
        server = Path(sys.executable).with_name("moto_server")
        cmd = [str(server)] if server.exists() else [sys.executable, "-m", "moto.server"]
        self._proc = subprocess.Popen(
            [*cmd, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).read()
                break
            except OSError:
                if self._proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"local S3 server did not start on {self.endpoint}")
                time.sleep(0.2)
        if self.set_env:
            for key, value in {**_ENV, "AWS_ENDPOINT_URL": self.endpoint}.items():
                self._saved_env[key] = os.environ.get(key)
                os.environ[key] = value
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, **{
            "aws_access_key_id": _ENV["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": _ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": _ENV["AWS_DEFAULT_REGION"],
        }).create_bucket(Bucket=name)

    def __enter__(self) -> "LocalS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
