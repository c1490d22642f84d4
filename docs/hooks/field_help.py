"""A griffe extension for the API reference: the argument dataclasses (`ModelArguments`, `DataArguments`,
`SlipTrainingArguments`, `BuildConfig`, ...) document each field where `HfArgumentParser` reads it, in
`field(..., metadata={"help": ...})`, so that `--help` and the reference say the same. This turns those fields
into the class's `Args:` section (the reference's table adds each type and default from the signature);
nothing is written twice."""

import ast

import griffe


def _field_call(value: ast.expr | None) -> ast.Call | None:
    if isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", None)) == "field":
        return value
    return None


def _help(call: ast.Call) -> str | None:
    metadata = next((keyword.value for keyword in call.keywords if keyword.arg == "metadata"), None)
    if isinstance(metadata, ast.Dict):
        for key, value in zip(metadata.keys, metadata.values):
            if isinstance(key, ast.Constant) and key.value == "help" and isinstance(value, ast.Constant):
                return " ".join(str(value.value).split())
    return None


class FieldHelp(griffe.Extension):
    """Appends an `Args:` section built from the fields' `metadata["help"]` to a dataclass's docstring."""

    def on_class_members(self, *, node, cls: griffe.Class, agent, **kwargs) -> None:
        if not isinstance(node, ast.ClassDef):
            return
        lines = []
        for statement in node.body:
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            call = _field_call(statement.value)
            if call is None:
                continue
            help_text = _help(call)
            if help_text is not None:  # the type and the default come from the signature, as for any class
                lines.append(f"    {statement.target.id} ({ast.unparse(statement.annotation)}): {help_text}")
        if not lines:
            return
        section = "Args:\n" + "\n".join(lines)
        if cls.docstring is None:
            cls.docstring = griffe.Docstring(section, parent=cls)
        else:
            cls.docstring.value = cls.docstring.value.rstrip() + "\n\n" + section
