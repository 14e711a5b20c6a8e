"""Modal dialogs: confirm before destroying, a one-line question, a choice, a service form,
a file transfer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.validation import Integer, ValidationResult, Validator
from textual.widgets import Button, Input, Label, OptionList, RadioButton, RadioSet, Static
from textual.widgets.option_list import Option

from engine.errors import GroveError
from tui.models import Limits

T = TypeVar("T")


class Checked(Validator):
    """A value the engine's own parser accepts: its GroveError, cause and remedy, otherwise."""

    def __init__(self, check: Callable[[str], object]) -> None:
        super().__init__()
        self.check = check

    def validate(self, value: str) -> ValidationResult:
        try:
            self.check(value)
        except GroveError as exc:
            return self.failure(f"{exc.message}; {exc.remedy}" if exc.remedy else exc.message)
        return self.success()


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no. Focus starts on Cancel, so a stray enter never destroys anything."""

    CSS_PATH = Path(__file__).with_name("dialogs.tcss")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", show=False),
        Binding("n,escape", "answer(False)", "No", show=False),
    ]

    def __init__(self, title: str, message: str, confirm_label: str = "Confirm") -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.message, classes="dialog-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.confirm_label, variant="error", id="confirm")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "confirm")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class FormScreen(ModalScreen[T]):
    """A dialog that asks: escape or Cancel dismisses it with None, OK (or enter) finishes."""

    CSS_PATH = Path(__file__).with_name("dialogs.tcss")
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", show=False)]

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "ok":
            self._finish()
        else:
            self.dismiss(None)

    def _finish(self) -> None:
        """Check the answer; dismiss with it, or say what is wrong and stay."""

    def action_cancel(self) -> None:
        self.dismiss(None)


class AskScreen(FormScreen[str | None]):
    """Ask for one value (an environment, a fork count). Escape cancels."""

    def __init__(
        self,
        title: str,
        prompt: str,
        value: str = "",
        suggestions: Sequence[str] = (),
        validators: Sequence[Validator] = (),
        allow_empty: bool = False,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.prompt = prompt
        self.value = value
        self.suggestions = list(suggestions)
        self.validators = list(validators)
        #: An empty answer is an answer ("" : e.g. reset to how it was created), not a cancel.
        self.allow_empty = allow_empty

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.prompt, classes="dialog-message")
            yield Input(
                self.value,
                suggester=SuggestFromList(self.suggestions, case_sensitive=False)
                if self.suggestions
                else None,
                validators=self.validators,
                id="answer",
            )
            yield Static("", id="answer-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#answer", Input).focus()

    @on(Input.Submitted, "#answer")
    def _submitted(self) -> None:
        self._finish()

    def _finish(self) -> None:
        box = self.query_one("#answer", Input)
        result = box.validate(box.value)
        if result is not None and not result.is_valid:
            self.query_one("#answer-error", Static).update("; ".join(result.failure_descriptions))
            return
        answer = box.value.strip()
        self.dismiss(answer if answer or self.allow_empty else None)


class ChooseScreen(FormScreen[str | None]):
    """Pick one of a few options (a new shell, or one of the running ones). Escape cancels."""

    def __init__(self, title: str, prompt: str, options: Sequence[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text = title
        self.prompt = prompt
        self.options = list(options)  # (value, label)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static(self.prompt, classes="dialog-message")
            yield OptionList(
                *(Option(label, id=value) for value, label in self.options), id="choices"
            )

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.highlighted = 0
        options.focus()

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)


@dataclass(frozen=True)
class CreateRequest:
    environment: str
    name: str
    vcpus: int
    mem_mib: int


class CreateScreen(FormScreen[CreateRequest | None]):
    """A new sandbox: its environment, an optional name, and its size within what the
    engine accepts (the bounds come from the engine, not from here)."""

    def __init__(
        self, title: str, environments: Sequence[str], default: str, limits: Limits
    ) -> None:
        super().__init__()
        self.title_text = title
        self.environments = list(environments)
        self.default = default
        self.limits = limits

    def compose(self) -> ComposeResult:
        lim = self.limits
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static("Environment", classes="field-label")
            yield Input(
                self.default,
                suggester=SuggestFromList(self.environments, case_sensitive=False),
                id="create-environment",
            )
            yield Static("Name (optional)", classes="field-label")
            yield Input("", placeholder="its id", id="create-name")
            yield Static(f"vCPUs (1 to {lim.max_vcpus})", classes="field-label")
            yield Input(
                str(lim.default_vcpus),
                validators=[Integer(minimum=1, maximum=lim.max_vcpus)],
                id="create-vcpus",
            )
            yield Static(
                f"Memory in MiB ({lim.min_mem_mib} to {lim.max_mem_mib})", classes="field-label"
            )
            yield Input(
                str(lim.default_mem_mib),
                validators=[Integer(minimum=lim.min_mem_mib, maximum=lim.max_mem_mib)],
                id="create-mem",
            )
            yield Static("", id="answer-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Create", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#create-environment", Input).focus()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._finish()

    def _finish(self) -> None:
        environment = self.query_one("#create-environment", Input).value.strip()
        errors = [] if environment else ["Name an environment (e.g. debian:12)."]
        for box_id, what in (("#create-vcpus", "vCPUs"), ("#create-mem", "Memory")):
            box = self.query_one(box_id, Input)
            result = box.validate(box.value)
            if result is not None and not result.is_valid:
                errors.append(f"{what}: {'; '.join(result.failure_descriptions)}")
        if errors:
            self.query_one("#answer-error", Static).update(" ".join(errors))
            return
        self.dismiss(
            CreateRequest(
                environment,
                self.query_one("#create-name", Input).value.strip(),
                int(self.query_one("#create-vcpus", Input).value),
                int(self.query_one("#create-mem", Input).value),
            )
        )


class ServiceScreen(FormScreen[tuple[str, str, str] | None]):
    """Name, command and an optional readiness probe for a new service."""

    def __init__(self, title: str, name: str = "", command: str = "", probe: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.defaults = (name, command, probe)

    def compose(self) -> ComposeResult:
        name, command, probe = self.defaults
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield Static("Name", classes="field-label")
            yield Input(name, placeholder="web", id="service-name")
            yield Static("Command", classes="field-label")
            yield Input(command, placeholder="python3 -m http.server 8000", id="service-command")
            yield Static(
                "Ready when (optional): a port, HOST:PORT, an http:// URL, file:PATH "
                "or command:CMD",
                classes="field-label",
            )
            yield Input(probe, placeholder="8000", id="service-probe")
            yield Static("", id="answer-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#service-name", Input).focus()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "service-probe":
            self._finish()
        else:
            self.focus_next()

    def _finish(self) -> None:
        name = self.query_one("#service-name", Input).value.strip()
        command = self.query_one("#service-command", Input).value.strip()
        probe = self.query_one("#service-probe", Input).value.strip()
        missing = [
            label for label, value in (("a name", name), ("a command", command)) if not value
        ]
        if missing:
            self.query_one("#answer-error", Static).update(f"Give it {' and '.join(missing)}.")
            return
        self.dismiss((name, command, probe))


@dataclass(frozen=True)
class FilesRequest:
    #: push (local into the sandbox) or pull (out of it).
    direction: str
    local: str
    guest: str


def guest_default(path: str) -> str:
    """Where a push of `local` goes unless told: /root/<its name>."""
    local = Path(path).expanduser()
    name = local.name or local.resolve().name
    return f"/root/{name}" if name else ""


def local_default(path: str) -> str:
    """Where a pull of guest `path` lands unless told: ./<its name>."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return f"./{name}" if name else ""


class FilesScreen(FormScreen[FilesRequest | None]):
    """Push a local path into the sandbox, or pull a guest path out of it. The other path
    follows the one typed (push ./proj → /root/proj) until it is edited itself."""

    def __init__(self, title: str, direction: str = "push", local: str = "", guest: str = ""):
        super().__init__()
        self.title_text = title
        self.defaults = (direction, local, guest)
        #: What was last filled in for the user; a value that differs was typed.
        self._filled = {"files-local": local, "files-guest": guest}

    def compose(self) -> ComposeResult:
        direction, local, guest = self.defaults
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            with RadioSet(id="files-direction"):
                yield RadioButton(
                    "push: a local file or directory into the sandbox",
                    value=direction == "push",
                    id="push",
                )
                yield RadioButton(
                    "pull: a guest file or directory out of it",
                    value=direction == "pull",
                    id="pull",
                )
            yield Static("Local path", classes="field-label")
            yield Input(local, placeholder="./proj", id="files-local")
            yield Static("Guest path (absolute)", classes="field-label")
            yield Input(guest, placeholder="/root/proj", id="files-guest")
            yield Static("", id="answer-error", classes="dialog-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#files-local", Input).focus()

    @property
    def direction(self) -> str:
        pressed = self.query_one(RadioSet).pressed_button
        return "pull" if pressed is not None and pressed.id == "pull" else "push"

    @on(RadioSet.Changed)
    def _direction_changed(self) -> None:
        self._follow()
        self.query_one("#answer-error", Static).update("")

    @on(Input.Changed)
    def _typed(self, event: Input.Changed) -> None:
        if event.input.id in ("files-local", "files-guest"):
            self._follow()

    def _follow(self) -> None:
        """Fill the other path from the one that leads (local for a push, guest for a pull),
        unless it holds something the user typed."""
        if self.direction == "push":
            lead, other, fill = "files-local", "files-guest", guest_default
        else:
            lead, other, fill = "files-guest", "files-local", local_default
        box = self.query_one(f"#{other}", Input)
        if box.value.strip() and box.value != self._filled[other]:
            return
        leading = self.query_one(f"#{lead}", Input).value.strip()
        value = fill(leading) if leading else ""
        self._filled[other] = value
        if box.value != value:
            box.value = value

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "files-guest":
            self._finish()
        else:
            self.focus_next()

    def _finish(self) -> None:
        local = self.query_one("#files-local", Input).value.strip()
        guest = self.query_one("#files-guest", Input).value.strip()
        direction = self.direction
        errors = [
            f"Give a {what} path." for what, v in (("local", local), ("guest", guest)) if not v
        ]
        if guest and not guest.startswith("/"):
            errors.append("The guest path must be absolute (start with /).")
        if direction == "push" and local and not Path(local).expanduser().exists():
            errors.append(f"No local file or directory '{local}'.")
        if errors:
            self.query_one("#answer-error", Static).update(" ".join(errors))
            return
        self.dismiss(FilesRequest(direction, local, guest))
