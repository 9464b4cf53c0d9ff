# Palisade's image: docker build -t palisade:0.1.0 .
#
# Stage 1 builds in the official Rust image, from the locked dependency versions. CI (.ci/run)
# runs this stage's `cargo build` line as written here, so a change that breaks it fails CI even
# though no container engine runs there.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY core ./core
# Cargo.toml declares the benches and the workspace's members (the testkit); cargo needs their
# files to read the manifest, though the image builds neither.
COPY benches ./benches
COPY testkit ./testkit
RUN cargo build --release --locked --bin palisade

# Stage 2: distroless (glibc, CA certificates, no shell, no package manager), non-root. Only the
# binary and the default policies. The working directory belongs to the nonroot user, so that a
# bare `docker run palisade:0.1.0` can write its development certificates there.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/palisade /palisade
COPY policies /policies
ENV PALISADE_POLICIES=/policies
WORKDIR /home/nonroot
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/palisade"]
CMD ["serve"]
