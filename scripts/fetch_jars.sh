#!/usr/bin/env bash
# Pre-seed the Spark jars Kiln needs into a folder, with Maven, for clusters that cannot reach
# Maven Central at run time. Then: export KILN_SPARK_JARS=<folder> (or pass the jars with spark.jars).
# Usage: scripts/fetch_jars.sh [FOLDER] [--s3]
set -euo pipefail
dest="${1:-.cache/jars}"
mkdir -p "$dest"
delta=$(python3 -c "import re,sys;s=open('etl/spark.py').read();print(re.search(r'DELTA_VERSION = \"([^\"]+)\"',s)[1])")
hadoop=$(python3 -c "import re,sys;s=open('etl/spark.py').read();print(re.search(r'HADOOP_VERSION = \"([^\"]+)\"',s)[1])")
artifacts=("io.delta:delta-spark_2.13:$delta" "io.delta:delta-storage:$delta" "org.antlr:antlr4-runtime:4.13.1")
if [[ "${2:-}" == "--s3" ]]; then
  artifacts+=("org.apache.hadoop:hadoop-aws:$hadoop" "software.amazon.awssdk:bundle:2.24.6" "org.wildfly.openssl:wildfly-openssl:1.1.3.Final")
fi
for a in "${artifacts[@]}"; do
  mvn -q dependency:copy -Dartifact="$a" -DoutputDirectory="$dest" -Dmdep.overWriteReleases=false
done
ls -1 "$dest"
