"""A real SMTP server for the tests: aiosmtpd on a loopback port, every mail it receives written
as one JSON file (envelope, headers, decoded text and HTML parts) into a directory, so that Rust
tests can read what notbetrieb sent without a mail parser of their own.

    python smtp_sink.py --port PORT --dir DIR [--fail-first N]

--fail-first N answers the first N mails with a temporary failure (451), as a server under load
would. Prints "ready" once it listens.
"""
import argparse
import asyncio
import email
import email.policy
import json
import os
import time

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory, fail_first):
        self.directory = directory
        self.fail_first = fail_first
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        if self.fail_first > 0:
            self.fail_first -= 1
            return "451 4.3.0 try again later"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "headers": {k.lower(): str(v) for k, v in message.items()},
            "text": text.get_content() if text else "",
            "html": html.get_content() if html else "",
            "received_at": time.time(),
        }
        self.count += 1
        name = f"{time.time_ns()}-{self.count}.json"
        tmp = os.path.join(self.directory, "." + name)
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(tmp, os.path.join(self.directory, name))
        return "250 OK"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    controller = Controller(Sink(args.dir, args.fail_first), hostname="127.0.0.1", port=args.port)
    controller.start()
    print("ready", flush=True)
    try:
        asyncio.new_event_loop().run_forever()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
