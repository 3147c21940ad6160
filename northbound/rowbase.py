"""The machinery under every desired NB row: field kinds, owners, and the NbRow base.

northbound.rows defines the row classes on top of this and re-exports it all; import from
there. A row never carries UUIDs: it names its parent (the row whose column holds it), the
rows it references and the containers it is a member of, and the reconciler resolves names
inside the transaction. Each field says through its metadata which OVSDB column it is and how
it is stored, so converting to and from the database is generic (see `columns`, `references`,
`from_db`).

Column forms follow the python IDL: optional scalars are lists of 0 or 1 item, sets are sorted
lists, maps are dicts. Equality of two rows is equality of these forms.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, ClassVar

from northbound import names
from northbound.membership import Membership, member_columns

SCALAR, OPTIONAL, SET, MAP = "scalar", "optional", "set", "map"
PLAIN_KINDS = (SCALAR, OPTIONAL, SET, MAP)


def _col(kind: str = SCALAR, name: str | None = None, default: Any = dataclasses.MISSING) -> Any:
    meta = {"kind": kind, "column": name}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    if isinstance(default, (dict, list, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _ref(column: str, table: str) -> Any:
    """A set of names of other rows, stored as a reference column (weak or strong), managed
    from this (the container's) side: see northbound.membership for which columns are."""
    return field(default=frozenset(), metadata={"kind": "ref", "column": column, "table": table})


def _parent(table: str, column: str) -> Any:
    """Name of the row whose `column` holds this (non-root) row."""
    return field(metadata={"kind": "parent", "table": table, "column": column})


@dataclass(frozen=True)
class Owner:
    """The Kubernetes object a row exists for: `kind` and `ns/name` (or `name`)."""

    type: str
    name: str

    def __str__(self) -> str:
        return f"{self.type} {self.name}"

    def ids(self) -> dict[str, str]:
        return names.owner_ids(self.type, self.name)


CLUSTER = Owner(names.OwnerType.CLUSTER, names.CLUSTER_OWNER)


@dataclass(frozen=True)
class ParentRef:
    table: str
    name: str
    column: str


def _canonical(kind: str, value: Any) -> Any:
    if kind == OPTIONAL:
        if value is None or value == []:
            return []
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if kind == SET:
        return sorted(value)
    if kind == MAP:
        return {str(k): v for k, v in dict(value).items()}
    return value


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str
    column: str
    table: str = ""


@functools.cache
def field_specs(cls: type) -> tuple[FieldSpec, ...]:
    """The database meaning of each field of a row class (computed once per class)."""
    return tuple(
        FieldSpec(f.name, f.metadata.get("kind", ""), f.metadata.get("column") or f.name,
                  f.metadata.get("table", ""))
        for f in dataclasses.fields(cls)
    )


@functools.cache
def column_kinds(cls: type) -> dict[str, str]:
    """column -> kind of every plain column the class writes (external_ids is a map)."""
    kinds = {f.column: f.kind for f in field_specs(cls) if f.kind in PLAIN_KINDS}
    if getattr(cls, "HAS_EXTERNAL_IDS", False):
        kinds["external_ids"] = MAP
    return kinds


@dataclass(frozen=True, kw_only=True)
class NbRow:
    """Base of every desired row. Subclasses set TABLE and, for unnamed tables, KEY_FIELDS."""

    TABLE: ClassVar[str]
    KEY_FIELDS: ClassVar[tuple[str, ...]] = ("name",)
    """Fields whose values identify the row within its table when no explicit key is given."""
    KEY_PREFIX: ClassVar[str] = ""
    """Keeps keys of one table apart when rows of several classes share it (ACLs)."""
    HAS_EXTERNAL_IDS: ClassVar[bool] = True

    owner: Owner = field(metadata={"kind": "owner"})
    extra_ids: Mapping[str, str] = field(default_factory=dict, metadata={"kind": "extra"})
    member_of: AbstractSet[Membership] = field(default=frozenset(),
                                               metadata={"kind": "member_of"})
    """Containers, possibly of other owners, whose member-side column holds this row
    (northbound.membership). Written by mutation, so their other members stay; any set is
    accepted and kept as a frozenset."""

    def __post_init__(self) -> None:
        if not self.member_of:
            return
        memberships = frozenset(self.member_of)
        object.__setattr__(self, "member_of", memberships)
        for m in memberships:
            if m.member_table != self.TABLE:
                raise ValueError(
                    f"{self.TABLE} {self.key!r} cannot be a member of {m}: that column holds "
                    f"{m.member_table} rows"
                )

    @classmethod
    def membership(cls, name: str, column: str = "") -> Membership:
        """A membership in the row of this (container) class named `name`; `column` may be
        left out when the table has a single member-side column."""
        if not column:
            columns = member_columns(cls.TABLE)
            if len(columns) != 1:
                raise ValueError(f"{cls.TABLE} has member-side columns {list(columns)}: "
                                 "name the column")
            column = columns[0]
        return Membership(cls.TABLE, name, column)

    @property
    def NAMED(self) -> bool:
        """Rows of OVN-named tables are identified by their (unique) name column."""
        return self.KEY_FIELDS == ("name",)

    @property
    def key(self) -> str:
        explicit = getattr(self, "row_key", "")
        if explicit:
            return explicit
        return self.KEY_PREFIX + "|".join(str(getattr(self, f)) for f in self.KEY_FIELDS)

    @property
    def ident(self) -> tuple[str, str]:
        return (self.TABLE, self.key)

    def external_ids(self) -> dict[str, str]:
        ids = dict(self.extra_ids)
        ids.update(self.owner.ids())
        if self.KEY_FIELDS != ("name",):
            ids[names.ROW_KEY] = self.key
        return ids

    def columns(self) -> dict[str, Any]:
        """Plain columns, in IDL form, that the reconciler writes exactly."""
        cols = {
            f.column: _canonical(f.kind, getattr(self, f.name))
            for f in field_specs(type(self))
            if f.kind in PLAIN_KINDS
        }
        if self.HAS_EXTERNAL_IDS:
            cols["external_ids"] = self.external_ids()
        return cols

    def references(self) -> dict[str, tuple[str, frozenset[str]]]:
        """Reference columns: column -> (target table, names of kovn rows it must hold)."""
        return {
            f.column: (f.table, frozenset(getattr(self, f.name)))
            for f in field_specs(type(self))
            if f.kind == "ref"
        }

    def parent(self) -> ParentRef | None:
        for f in field_specs(type(self)):
            if f.kind == "parent":
                return ParentRef(f.table, getattr(self, f.name), f.column)
        return None

    @classmethod
    def owner_from_db(cls, columns: Mapping[str, Any]) -> Owner:
        """The owner recorded in the row's external_ids (tables without them override)."""
        ids = columns.get("external_ids", {})
        return Owner(ids.get(names.OWNER_TYPE_KEY, ""), ids.get(names.OWNER_KEY, ""))

    @classmethod
    def from_db(
        cls,
        columns: Mapping[str, Any],
        parent: str | None,
        references: Mapping[str, frozenset[str]],
        member_of: AbstractSet[Membership] = frozenset(),
    ) -> NbRow:
        """Rebuild a row from the database's view (the inverse of columns/references/parent/
        member_of)."""
        kwargs: dict[str, Any] = {"owner": cls.owner_from_db(columns),
                                  "member_of": frozenset(member_of)}
        ids = dict(columns.get("external_ids", {}))
        for f in field_specs(cls):
            kind = f.kind
            if kind in PLAIN_KINDS:
                value = columns[f.column]
                if kind == OPTIONAL:
                    value = value[0] if value else None
                elif kind == SET:
                    value = tuple(sorted(value))
                elif kind == MAP:
                    value = dict(value)
                kwargs[f.name] = value
            elif kind == "ref":
                kwargs[f.name] = frozenset(references.get(f.column, ()))
            elif kind == "parent":
                kwargs[f.name] = parent or ""
            elif f.name == "row_key":
                kwargs[f.name] = ids.get(names.ROW_KEY, "")
        if cls.HAS_EXTERNAL_IDS:
            for k in (*names.OWNED_KEYS, names.ROW_KEY):
                ids.pop(k, None)
            kwargs["extra_ids"] = ids
        return cls(**kwargs)
