"""Drives the bridge's tus endpoint with a real tus client (PyPI `tuspy`), for tests/e2e/tus.rs.

    tus_client.py start  URL TOKEN FILE STOP_AT CHUNK  -> prints the upload URL after uploading
                                                          the bytes before STOP_AT, then stops
    tus_client.py resume URL TOKEN FILE CHUNK          -> continues the upload at URL (any bridge)
                                                          and prints the response headers of the
                                                          last PATCH as JSON

Metadata sent: filename (the file's name), entityType=course, entityId=tus1, isPublic=false,
metadata={"source":"tuspy"}. Checksums (sha1) on every PATCH.
"""
import json
import os
import sys

from tusclient import client
from tusclient.uploader import Uploader


def uploader(endpoint, token, path, chunk, url=None):
    tus = client.TusClient(endpoint, headers={"Authorization": "Bearer " + token})
    metadata = {
        "filename": os.path.basename(path),
        "entityType": "course",
        "entityId": "tus1",
        "isPublic": "false",
        "metadata": json.dumps({"source": "tuspy"}),
    }
    return Uploader(
        file_path=path,
        client=tus,
        url=url,
        chunk_size=chunk,
        metadata=metadata,
        upload_checksum=True,
        retries=0,
    )


def main():
    command = sys.argv[1]
    if command == "start":
        endpoint, token, path, stop_at, chunk = sys.argv[2:7]
        up = uploader(endpoint, token, path, int(chunk))
        up.upload(stop_at=int(stop_at))
        print(json.dumps({"url": up.url, "offset": up.offset}))
    elif command == "resume":
        url, token, path, chunk = sys.argv[2:6]
        endpoint = url.rsplit("/", 1)[0]
        up = uploader(endpoint, token, path, int(chunk), url=url)
        resumed_at = up.offset
        up.upload()
        headers = {k.lower(): v for k, v in up.request.response_headers.items()}
        print(json.dumps({"resumedAt": resumed_at, "offset": up.offset, "headers": headers}))
    else:
        raise SystemExit("usage: tus_client.py start|resume ...")


if __name__ == "__main__":
    main()
