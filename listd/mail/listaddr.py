"""The addresses a list answers at, in the style the list is configured for.

``commands: request`` → ``list-request@`` with the command in the Subject;
``commands: plus`` → ``list+subscribe@``, ``list+confirm-TOKEN@`` (many provider mailboxes
deliver "+" forms of an address to the same mailbox without any alias set up). Both forms
are always understood when they arrive; this only decides what we announce.
"""

from __future__ import annotations

from dataclasses import dataclass

from listd.config import ListConfig


@dataclass(frozen=True)
class ListAddresses:
    post: str
    request: str
    owner: str
    plus_style: bool

    @classmethod
    def of(cls, lst: ListConfig) -> ListAddresses:
        local, _, domain = lst.address.rpartition("@")
        return cls(post=lst.address, request=f"{local}-request@{domain}",
                   owner=f"{local}-owner@{domain}", plus_style=lst.commands == "plus")

    def _plus(self, tag: str) -> str:
        local, _, domain = self.post.rpartition("@")
        return f"{local}+{tag}@{domain}"

    def command_uri(self, verb: str, token: str = "") -> str:
        """A mailto URI that performs ``verb`` (with ``token``) when mailed as it is."""
        if self.plus_style:
            return f"mailto:{self._plus(f'{verb}-{token}' if token else verb)}"
        subject = f"{verb}%20{token}" if token else verb
        return f"mailto:{self.request}?subject={subject}"

    def token_address(self, verb: str, token: str) -> str:
        """The Reply-To of a mail carrying a token: replying to it performs ``verb``
        (the Subject, "VERB TOKEN", does the same for the -request style)."""
        return self._plus(f"{verb}-{token}") if self.plus_style else self.request

    def how_to(self, verb: str) -> str:
        """A sentence fragment telling a person how to send ``verb``."""
        if self.plus_style:
            return f"send any message to {self._plus(verb)}"
        return f"send a message with the subject \"{verb}\" to {self.request}"
