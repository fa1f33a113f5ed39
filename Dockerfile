# The plugin rootfs, built the conventional way, for builders who can pull from a container
# registry. scripts/build-with-docker.sh turns the image into the plugin bundle
# (plugin/config.json + plugin/rootfs). Without a registry use ./rootfs.build.sh instead: it
# makes the same tree from Debian's apt mirror and the npm registry.
#
# The result must match rootfs.build.sh and config.json: node at /usr/local/bin/node, tini at
# /usr/bin/tini, the app in /app, and the directories config.json mounts onto.
#
# No "# syntax=" line on purpose: it would make BuildKit pull a frontend image.

# Any Debian 12 (bookworm) image with Node 24 and npm; the official node images keep node at
# /usr/local/bin/node. Override with --build-arg BASE_IMAGE=<your registry>/node:24-bookworm-slim.
ARG BASE_IMAGE=node:24-bookworm-slim

# ---- build: compile TypeScript, then drop dev dependencies ----------------------------------
FROM ${BASE_IMAGE} AS build
# gcc + libc6-dev: the spawn helper (native/ossnas-spawn.c), built static by the build's postbuild.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Manifests first, so the dependency layer is reused while only sources change.
COPY package.json package-lock.json ./
# --ignore-scripts: only tsc runs here, no package needs its install scripts.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY native ./native
COPY scripts/build-native.sh ./scripts/
RUN npm run build \
 && npm prune --omit=dev --ignore-scripts --no-audit --no-fund

# ---- runtime: what the plugin runs ----------------------------------------------------------
FROM ${BASE_IMAGE}
# s3fs, rclone: OSS/S3 volumes over FUSE; fuse3: fusermount3; util-linux: mount, umount, nsenter;
# tini: PID 1, reaps s3fs' double-forked daemons; ca-certificates: https endpoints.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      s3fs rclone fuse3 util-linux e2fsprogs xfsprogs tini ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /usr/share/doc/* /usr/share/man/*
# config.json starts /usr/local/bin/node: the node images have it there; a base that keeps node
# elsewhere gets a link, and a base without node fails here rather than at `plugin enable`.
RUN node_bin=$(command -v node) \
 && if [ "$node_bin" != /usr/local/bin/node ]; then ln -s "$node_bin" /usr/local/bin/node; fi \
 && /usr/local/bin/node --version \
 && test -x /usr/bin/tini
WORKDIR /app
COPY --from=build /src/package.json /src/package-lock.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY --from=build /src/native/ossnas-spawn ./native/
# Mount points and directories config.json and the app expect (same list as rootfs.build.sh).
RUN mkdir -p /run/docker/plugins /mnt/volumes /var/lib/ossnas /etc/ossnas/credentials /run/ossnas
# For `docker run` while debugging; as a plugin, config.json's entrypoint is what runs.
ENTRYPOINT ["/usr/bin/tini", "-s", "-g", "--", "/usr/local/bin/node", "/app/dist/main.js"]
