#!/usr/bin/env bash
# Builds the tansu broker Tally runs: tansu 0.6.0 from crates.io with two changes to its sqlite storage, a bounded
# fetch query (record_fetch.sql) and an index on the header table (041-header-index.sql); see README.md here. Run by
# install-deps.sh, or by hand to rebuild. The binary lands in $TANSU_BIN only when the build succeeded.
source "$(dirname "$0")/../lib.sh"

# The published crates, checked against the checksums crates.io lists for them.
declare -A sha256=(
    [tansu]=4fdd85473ec265140488cf8d55e82b844f5c051c8916fabdd4a71156ac053f6d
    [tansu-storage]=720d2ed8e6010c70f7f06e5af5a7274ebbf6e42fdcd9e46de542b10dc4d2f35d
)

work="$TALLY_CACHE/tansu-$TANSU_VERSION-$TANSU_BUILD-src"
rm -rf "$work"
mkdir -p "$work"
for crate in tansu tansu-storage; do
    file="$work/$crate-$TANSU_VERSION.crate"
    curl --proto '=https' -sSfL -o "$file" "https://static.crates.io/crates/$crate/$crate-$TANSU_VERSION.crate" \
        || die "cannot download $crate $TANSU_VERSION from crates.io"
    echo "${sha256[$crate]}  $file" | sha256sum --check --quiet - || die "$crate-$TANSU_VERSION.crate: checksum mismatch"
    tar -xzf "$file" -C "$work"
done

storage="$work/tansu-storage-$TANSU_VERSION/src"
cp "$REPO/scripts/tansu/record_fetch.sql" "$storage/sql/record_fetch.sql"
cp "$REPO/scripts/tansu/041-header-index.sql" "$storage/ddl/041-header-index.sql"
# The sqlite engine runs the DDL files its lite.rs lists, in name order: list the new one after the header table.
sed -i 's|^\( *\)("040-header.sql", include_sql!("ddl/040-header.sql")),$|&\n\1("041-header-index.sql", include_sql!("ddl/041-header-index.sql")),|' \
    "$storage/lite.rs"
[ "$(grep -c '"041-header-index.sql"' "$storage/lite.rs")" = 1 ] || die "tansu-storage's lite.rs: cannot list the header index"
# Every tansu crate that uses the storage crate gets the changed one; the lock file that tansu publishes keeps every
# other dependency at the version it was released with (a newer deadpool-postgres breaks the build).
cat >>"$work/tansu-$TANSU_VERSION/Cargo.toml" <<TOML

[patch.crates-io]
tansu-storage = { path = "../tansu-storage-$TANSU_VERSION" }
TOML

(cd "$work/tansu-$TANSU_VERSION" &&
    CARGO_TARGET_DIR="$work/target" cargo build --release --quiet --features libsql --bin tansu)
mkdir -p "$(dirname "$TANSU_BIN")"
install -m 0755 "$work/target/release/tansu" "$TANSU_BIN.tmp"
mv "$TANSU_BIN.tmp" "$TANSU_BIN"
rm -rf "$work"
say "built $TANSU_BIN"
