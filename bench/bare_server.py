"""A bare aiohttp server answering 200 with a small JSON body: the ceiling of
the HTTP stack on this machine, for comparison with SNAP over the gateway."""

import sys

from aiohttp import web


async def ok(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"responseCode": "2002500"})


def main() -> None:
    app = web.Application()
    app.router.add_post("/{tail:.*}", ok)
    print("bare server ready", file=sys.stderr, flush=True)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
