"""vLLM's answers to requests it cannot serve: the error JSON (flat before vLLM 0.10.1, nested
from it, or as KIT_DOUBLE_ERROR_SHAPE says), request validation errors worded like pydantic's,
and the checks of a JSON request body."""

from __future__ import annotations

import json

from .http_server import Request, Response, json_response


class Errors:
    def __init__(self, nested: bool, served_names: list[str]) -> None:
        self.nested = nested
        self.served_names = served_names

    def error(
        self,
        message: str,
        err_type: str = "BadRequestError",
        code: int = 400,
        status: int | None = None,
    ) -> Response:
        if self.nested:
            obj: dict = {
                "error": {"message": message, "type": err_type, "param": None, "code": code}
            }
        else:
            obj = {
                "object": "error",
                "message": message,
                "type": err_type,
                "param": None,
                "code": code,
            }
        return json_response(obj, status if status is not None else code)

    def unsupported(self, api: str) -> Response:
        """`api` is not served by this model's runner. vLLM returns the ErrorResponse model from
        the route without a status code, so FastAPI answers HTTP 200 with an error body
        (vllm-project/vllm#21704)."""
        return self.error(f"The model does not support {api}", "BadRequestError", 400, status=200)

    def invalid(self, err_type: str, loc: tuple, msg: str, value: object, **ctx) -> Response:
        """A request validation error, worded as the repr of pydantic's error list (as vLLM)."""
        detail: dict = {"type": err_type, "loc": ("body", *loc), "msg": msg, "input": value}
        if ctx:
            detail["ctx"] = ctx
        return self.error(repr([detail]))

    def missing_field(self, field: str, body: dict) -> Response:
        return self.invalid("missing", (field,), "Field required", body)

    def json_body(self, req: Request) -> tuple[dict | None, Response | None]:
        """The request's JSON object, or the answer when it is not one or names another model."""
        try:
            body = json.loads(req.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            loc = (getattr(exc, "pos", 0),)
            return None, self.invalid(
                "json_invalid", loc, "JSON decode error", {}, error=type(exc).__name__
            )
        if not isinstance(body, dict):
            return None, self.invalid(
                "model_attributes_type",
                (),
                "Input should be a valid dictionary or object to extract fields from",
                body,
            )
        model = body.get("model")
        if model is not None and model not in self.served_names:
            return None, self.error(f"The model `{model}` does not exist.", "NotFoundError", 404)
        return body, None
