# Build: docker build -t palisade .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo.toml declares the benches; cargo needs their files to read the manifest.
COPY benches ./benches
RUN cargo build --release --locked --bin palisade

# Run as an unprivileged user on a minimal base; the bundled policies ship in the image.
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /palisade
COPY --from=build /src/target/release/palisade /usr/local/bin/palisade
COPY policies ./policies
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/palisade"]
CMD ["serve", "--no-dev-certs", "--tls-cert", "/certs/tls.crt", "--tls-key", "/certs/tls.key", "--log-format", "json"]
