"""The "Trajectories" dashboard as a TensorBoard plugin (registered through the ``tensorboard_plugins`` entry point).

TensorBoard serves every route below under ``data/plugin/trajectories/``. The frontend is ``static/index.js``, an
ES module TensorBoard loads into its dashboard frame (no build step, nothing fetched from outside);
``index.html`` (with ``boot.js``) shows the same dashboard as a page of its own, and takes a link's ``run`` and
``file`` (or ``find``).

Data routes (JSON; ``run`` and ``file`` name a source as ``runs`` lists it):

- ``runs``: every run with its sources (stage, step, number of trajectories, accuracy);
- ``trajectories?run=&file=[&result=&verdict=&tool_error=&invalid=&steps=]``: the filtered rows and, per filter,
  the count of each value;
- ``trajectory?run=&file=&index=``: one trajectory's whole view (the one ``swirl data show`` prints);
- ``compare?run=&file=&other_run=&other_file=[&filters]``: the questions both sources hold (filtered on the first),
  with what changed from the earlier step to the later;
- ``pair?run=&file=&other_run=&other_file=&example_id=&sample_index=``: one question on both sides, the earlier
  step first, with the differences marked;
- ``find?path=``: the source whose path ends with ``path`` (links written by training into TensorBoard's text tab).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import Request, Response

from swirl_tensorboard.rollouts import FACETS, RolloutStore, comparison, find_pair, in_order, listing, pair_views

PLUGIN_NAME = "trajectories"
STATIC = {"/index.js": "text/javascript", "/boot.js": "text/javascript", "/style.css": "text/css",
          "/index.html": "text/html"}


class BadRequest(ValueError):
    """A request the routes cannot answer: answered with status 400 and the message."""


def _json(request: Request, data: Any, status: int = 200) -> Response:
    return http_util.Respond(request, json.dumps(data, ensure_ascii=False), "application/json", code=status)


def _route(handler: Callable[[Request], Any]) -> Callable:
    """A WSGI app answering ``handler(request)`` as JSON; bad input is a 400, a missing source a 404."""

    @Request.application
    def app(request: Request) -> Response:
        try:
            return _json(request, handler(request))
        except BadRequest as error:
            return _json(request, {"error": str(error)}, 400)
        except KeyError as error:
            return _json(request, {"error": error.args[0] if error.args else str(error)}, 404)

    return app


def _argument(request: Request, name: str) -> str:
    value = request.args.get(name)
    if value is None or value == "":
        raise BadRequest(f"missing query parameter {name!r}")
    return value


def _integer(request: Request, name: str) -> int:
    value = _argument(request, name)
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{name}: expected an integer, got {value!r}") from None


def _filters(request: Request) -> dict[str, str]:
    return {facet: request.args[facet] for facet in FACETS if request.args.get(facet)}


class TrajectoriesPlugin(base_plugin.TBPlugin):
    """Lists, filters, shows and compares the rollouts swirl-lightning writes into a TensorBoard log folder."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext) -> None:
        self.store = RolloutStore(context.logdir or "")

    def is_active(self) -> bool:
        return bool(self.store.sources())

    def data_plugin_names(self):
        return ()  # it reads rollout files, not summaries

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="Trajectories", disable_reload=True)

    def get_plugin_apps(self) -> dict[str, Callable]:
        apps = {route: self._static(route[1:], mime) for route, mime in STATIC.items()}
        apps.update({"/runs": _route(self._runs), "/trajectories": _route(self._trajectories),
                     "/trajectory": _route(self._trajectory), "/compare": _route(self._compare),
                     "/pair": _route(self._pair), "/find": _route(self._find)})
        return apps

    @staticmethod
    def _static(name: str, mime: str) -> Callable:
        @Request.application
        def app(request: Request) -> Response:
            body = resources.files("swirl_tensorboard").joinpath("static", name).read_bytes()
            # Respond adds TensorBoard's security headers (for the page: scripts from this origin only).
            return http_util.Respond(request, body, mime)

        return app

    def _source(self, request: Request, run: str = "run", file: str = "file"):
        return self.store.source(_argument(request, run), _argument(request, file))

    def _runs(self, request: Request) -> dict[str, Any]:
        return {"logdir": str(self.store.logdir or ""), "runs": self.store.overview()}

    def _trajectories(self, request: Request) -> dict[str, Any]:
        source = self._source(request)
        try:
            result = listing(self.store.trajectories(source), _filters(request))
        except ValueError as error:
            raise BadRequest(str(error)) from None
        return {"source": source.describe(), **result}

    def _trajectory(self, request: Request) -> dict[str, Any]:
        from swirl_lightning.rollout.view import trajectory_view

        source = self._source(request)
        trajectories = self.store.trajectories(source)
        index = _integer(request, "index")
        if not 0 <= index < len(trajectories):
            raise KeyError(f"index {index} is out of range: {source.file} holds {len(trajectories)} trajectories")
        return {"source": source.describe(), "index": index, "view": trajectory_view(trajectories[index])}

    def _compare(self, request: Request) -> dict[str, Any]:
        selected = self._source(request)
        before, after = in_order(selected, self._source(request, "other_run", "other_file"))
        result = comparison(self.store.trajectories(before), self.store.trajectories(after), _filters(request),
                            filter_on="before" if before == selected else "after")
        return {"before": before.describe(), "after": after.describe(), **result}

    def _pair(self, request: Request) -> dict[str, Any]:
        before, after = in_order(self._source(request), self._source(request, "other_run", "other_file"))
        left, right = find_pair(self.store.trajectories(before), self.store.trajectories(after),
                                _argument(request, "example_id"), _integer(request, "sample_index"))
        return {"before_source": before.describe(), "after_source": after.describe(), **pair_views(left, right)}

    def _find(self, request: Request) -> dict[str, Any]:
        return self.store.find(_argument(request, "path")).describe()
